"""experiment job: the experiment grid (feature sets x models x seeds) as child MLflow runs of one parent run.

Local (embedded default):
    python jobs/experiment.py feature_sets=[id,title,mllm_av] models=[sasrec] seeds=[1,2,3]
    captionrec experiment   # same function, as the console script; a re-run trains only what is missing

spark-submit on a GPU cluster (docs/deploy.md "Run with spark-submit"; `make pack-env` first; from the repo root;
every child trains as the train stage does, so the line adds the train stage's whole GPU and 4 cores per default
task):
    spark-submit --master spark://HOST:7077 \
        --properties-file conf/spark-gpu.conf \
        --conf spark.task.cpus=4 \
        --conf spark.task.resource.gpu.amount=1 \
        jobs/experiment.py --profile cluster storage.root=s3a://bucket/captionrec

Databricks (python_wheel_task): package_name "captionrec", entry_point "captionrec",
    parameters ["experiment", "--profile", "databricks"]
"""

import sys

from captionrec.cli import stage_main

if __name__ == "__main__":
    sys.exit(stage_main("experiment"))
