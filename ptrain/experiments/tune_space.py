"""`ptrain tune`'s search space: `--param key=loguniform:LOW:HIGH | uniform:LOW:HIGH | int:LOW:HIGH[:STEP] |
choice:A,B,C`, parsed and checked in one line each before any trial runs (no Optuna needed to parse)."""

from __future__ import annotations

from dataclasses import dataclass

from ptrain.errors import SweepError

KINDS = ("loguniform", "uniform", "int", "choice")
SET_BY_TUNE = ("run_dir", "hparams", "train.resume", "train.callbacks")
EXAMPLE = "e.g. train.learning_rate=loguniform:1e-4:1e-2 or train.per_device_batch_size=choice:16,32"


@dataclass(frozen=True)
class Param:
    key: str
    kind: str  # one of KINDS
    low: float = 0.0
    high: float = 0.0
    step: int = 1
    choices: tuple[str, ...] = ()

    def corners(self) -> list[str]:
        """The values that bound the range: each config they make is checked before the first trial."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            return [str(int(self.low)), str(int(self.high))]
        return [repr(self.low), repr(self.high)]

    def grid(self) -> list:
        """The values a grid search tries; refused for continuous ranges."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, self.step))
        raise SweepError(f"--param {self.key}: --sampler grid needs choice: or int: ranges, not {self.kind}:")

    def distribution(self):
        import optuna.distributions as d

        if self.kind == "choice":
            return d.CategoricalDistribution(self.choices)
        if self.kind == "int":
            return d.IntDistribution(int(self.low), int(self.high), step=self.step)
        return d.FloatDistribution(self.low, self.high, log=self.kind == "loguniform")


def parse_param(text: str) -> Param:
    key, sep, spec = text.partition("=")
    kind, _, rest = spec.partition(":")
    if not sep or not key or kind not in KINDS or not rest:
        raise SweepError(f"--param '{text}' is not key=KIND:RANGE with KIND one of {', '.join(KINDS)}; {EXAMPLE}")
    if key in SET_BY_TUNE:
        raise SweepError(f"--param '{text}': ptrain tune sets {key} itself for every trial")
    if kind == "choice":
        choices = tuple(v.strip() for v in rest.split(","))
        if len(choices) < 2 or any(not v for v in choices) or len(set(choices)) != len(choices):
            raise SweepError(f"--param '{text}': choice: needs two or more distinct values, e.g. choice:16,32")
        return Param(key, kind, choices=choices)
    parts = rest.split(":")
    try:
        if kind == "int":
            if len(parts) not in (2, 3):
                raise ValueError
            numbers = [int(p) for p in parts]
            low, high, step = numbers[0], numbers[1], numbers[2] if len(parts) == 3 else 1
        else:
            if len(parts) != 2:
                raise ValueError
            (low, high), step = (float(p) for p in parts), 1
    except ValueError:
        form = "int:LOW:HIGH[:STEP] with whole numbers" if kind == "int" else f"{kind}:LOW:HIGH with numbers"
        raise SweepError(
            f"--param '{text}': write {form}, e.g. {key}={kind}:{'8:64' if kind == 'int' else '1e-4:1e-2'}"
        ) from None
    if not low < high or step < 1:
        raise SweepError(f"--param '{text}': LOW must be below HIGH (and an int: STEP at least 1)")
    if kind == "loguniform" and low <= 0:
        raise SweepError(f"--param '{text}': loguniform needs LOW > 0; use uniform: for ranges that reach 0")
    return Param(key, kind, low, high, step)


def parse_space(texts: list[str]) -> list[Param]:
    if not texts:
        raise SweepError(f"nothing to tune: give at least one --param, {EXAMPLE}")
    params = [parse_param(t) for t in texts]
    keys = [p.key for p in params]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise SweepError(f"--param {twice[0]} is given twice; give each key one range")
    return params


def parse_enqueued(text: str, params: list[Param]) -> dict:
    """`--enqueue 'key=value key=value'`: a trial to run first, with these values of the tuned keys."""
    by_key = {p.key: p for p in params}
    values = {}
    for item in text.split():
        key, sep, value = item.partition("=")
        param = by_key.get(key)
        if not sep or param is None:
            raise SweepError(f"--enqueue '{text}': '{item}' is not key=value with a tuned key ({', '.join(by_key)})")
        values[key] = as_value(param, value, text)
    return values


def as_value(param: Param, value: str, text: str):
    if param.kind == "choice":
        if value not in param.choices:
            raise SweepError(f"--enqueue '{text}': {param.key}={value} is not one of {','.join(param.choices)}")
        return value
    try:
        number = int(value) if param.kind == "int" else float(value)
    except ValueError:
        raise SweepError(f"--enqueue '{text}': {param.key}={value} is not a number") from None
    if not param.low <= number <= param.high:
        raise SweepError(f"--enqueue '{text}': {param.key}={value} is outside {param.low}..{param.high}")
    return number


def as_override(param: Param, value) -> str:
    """The key=value override of a sampled value (YAML-parsed by load_config, as on the command line)."""
    return f"{param.key}={value if isinstance(value, str) else repr(value)}"
