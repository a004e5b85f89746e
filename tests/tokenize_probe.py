"""Launched by test_distributed on several processes: loads the splits as training does and prints, per process,
whether its tokenization was read back from the cache (all but the main process must read the main's)."""

import sys

from ptrain.runtime.distributed import build_accelerator
from ptrain.runtime.precision import resolve_config_precision
from ptrain.tasks import get_task, load_config
from ptrain.training.recipe import load_data


def main(config: str, overrides: list[str]) -> None:
    cfg, _ = resolve_config_precision(load_config(config, overrides))
    accelerator = build_accelerator(cfg)
    _, splits = load_data(cfg, get_task(cfg.task), accelerator)
    print(f"process {accelerator.process_index}/{accelerator.num_processes} cache hits {splits.cache_hits}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
