"""embed job: captions + titles + media -> item_features (BGE text vectors; VideoMAE and raw-audio baselines).

Local (embedded default):
    python jobs/embed.py embed.feature_sets=[title,mllm_av]
    captionrec embed embed.feature_sets=[title,mllm_av]   # same function, as the console script

spark-submit on a GPU cluster (docs/deploy.md "Run with spark-submit"; `make pack-env` first; from the repo root):
    spark-submit --master spark://HOST:7077 \
        --properties-file conf/spark-gpu.conf \
        jobs/embed.py --profile cluster storage.root=s3a://bucket/captionrec

Databricks (python_wheel_task): package_name "captionrec", entry_point "captionrec",
    parameters ["embed", "--profile", "databricks", ...] (resources/captionrec_job.yml)
"""

import sys

from captionrec.cli import stage_main

if __name__ == "__main__":
    sys.exit(stage_main("embed"))
