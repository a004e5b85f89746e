"""Launched by test_streaming on two processes: builds the training stream as `ptrain train` does and prints, per
process, the row numbers ("row N" in each text) of one epoch of its part of the stream."""

import re
import sys

from ptrain.runtime.distributed import build_accelerator
from ptrain.runtime.precision import resolve_config_precision
from ptrain.tasks import get_task, load_config
from ptrain.training.streamed_data import prepare_streamed_data


def main(config: str, overrides: list[str]) -> None:
    cfg, _ = resolve_config_precision(load_config(config, overrides))
    accelerator = build_accelerator(cfg)
    data = prepare_streamed_data(cfg, get_task(cfg.task), accelerator)
    texts = (data.tokenizer.decode(row["input_ids"]) for row in data.stream.rows.epoch_rows())
    rows = [int(re.search(r"row (\d+)", text).group(1)) for text in texts]
    print(f"process {accelerator.process_index} rows {rows}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
