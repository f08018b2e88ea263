"""caption job: items -> captions (Qwen2.5-VL video captions; faster-whisper + AST tags -> Qwen2-Audio/template audio
captions; optional Qwen2.5-Omni av and whole-video captions) through the model-map (mapInArrow, GPU-scheduled).

Local (embedded default):
    python jobs/caption.py caption.video.num_frames=16
    captionrec caption caption.video.num_frames=16   # same function, as the console script

spark-submit on a GPU cluster (docs/deploy.md "Run with spark-submit"; `make pack-env` first; from the repo root):
    spark-submit --master spark://HOST:7077 \
        --properties-file conf/spark-gpu.conf \
        jobs/caption.py --profile cluster storage.root=s3a://bucket/captionrec

Databricks (python_wheel_task): package_name "captionrec", entry_point "captionrec",
    parameters ["caption", "--profile", "databricks", ...] (resources/captionrec_job.yml)
"""

import sys

from captionrec.cli import stage_main

if __name__ == "__main__":
    sys.exit(stage_main("caption"))
