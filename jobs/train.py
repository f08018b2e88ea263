"""train job: interactions + item_features -> Two-Tower / SASRec trained with TorchDistributor, rolling-window
evaluation, MLflow runs.

Local (embedded default):
    python jobs/train.py model=sasrec features=mllm_av
    captionrec train model=sasrec features=mllm_av   # same function, as the console script

spark-submit on a GPU cluster (docs/deploy.md "Run with spark-submit"; `make pack-env` first; from the repo root):
    spark-submit --master spark://HOST:7077 \
        --properties-file conf/spark-gpu.conf \
        --conf spark.task.cpus=4 \
        --conf spark.task.resource.gpu.amount=1 \
        jobs/train.py --profile cluster storage.root=s3a://bucket/captionrec

Databricks (python_wheel_task): package_name "captionrec", entry_point "captionrec",
    parameters ["train", "--profile", "databricks", ...] (resources/captionrec_job.yml)
"""

import sys

from captionrec.cli import stage_main

if __name__ == "__main__":
    sys.exit(stage_main("train"))
