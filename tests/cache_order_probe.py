"""Launched by test_two_nodes on two nodes of two processes: inside caches_first, each process reads its node's
cache file, or writes it slowly when missing (as a tokenization does), and prints which it did. The first process
of each node must write and the others read: two writers of one cache would both print a miss."""

import sys
import time
from pathlib import Path

from accelerate import Accelerator

from ptrain.runtime.nodes import caches_first


def main(cache_dir: str) -> None:
    accelerator = Accelerator(cpu=True)
    cache = Path(cache_dir) / "cache.txt"
    with caches_first(accelerator):
        hit = cache.is_file()
        if not hit:
            time.sleep(1)  # a second writer would start meanwhile
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(f"written by process {accelerator.process_index}")
    print(f"process {accelerator.process_index}/{accelerator.num_processes} cache hit {hit}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
