"""A ptrain callback (train.callbacks): each evaluation's scores appended to RUN/eval_log.jsonl."""

import json


class EvalLog:
    def on_evaluate(self, view):
        if view.is_main_process:  # every process calls callbacks; one writes the file
            with open(view.run_dir / "eval_log.jsonl", "a") as log:
                log.write(json.dumps({"step": view.step, "epoch": view.epoch, **view.metrics}) + "\n")
