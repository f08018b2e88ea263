# Sourced by .ci/runtime.sh and .ci/summary_shape.sh: the pipeline run whose summaries are compared by shape.
# Needs REPO, say, fail and secs from the caller.
# -- the pipeline on the sample, tiny models, small grid -----------------------------------------------------
# One grid cell per feature set that needs no captions (id) and one that needs both caption kinds (mllm_av); the
# audio caption written by the Qwen2-Audio LLM (fusion=llm, as on clusters), not the template.
GRID=("experiment.feature_sets=[id,mllm_av]" "experiment.models=[sasrec]" "experiment.seeds=[42]"
      "caption.audio.fusion=llm")

run_pipeline() {  # <venv> <workdir> <label>: tiny models, then `captionrec all --json`; summaries in <workdir>/summaries.json
    local venv="$1" work="$2" label="$3" t
    mkdir -p "$work"
    t=$(date +%s)
    (cd "$work" && "$venv/bin/captionrec" tiny-models --out "$work/models/tiny" >"$work/tiny.log" 2>&1) \
        || { tail -40 "$work/tiny.log" >&2; fail "$label: tiny models did not build"; }
    say "$label: tiny models built in $(secs "$t") s"
    t=$(date +%s)
    (
        cd "$work"
        export PYSPARK_PYTHON="$venv/bin/python" PYSPARK_DRIVER_PYTHON="$venv/bin/python" SPARK_LOCAL_IP=127.0.0.1
        export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
        "$venv/bin/captionrec" all --json \
            "data.source=$REPO/data/sample" "storage.root=$work/lakehouse" \
            "tracking.tracking_uri=sqlite:///$work/mlflow.db" "report.out_dir=$work/reports" \
            "caption.tiny_models_dir=$work/models/tiny" "embed.tiny_models_dir=$work/models/tiny" \
            "${GRID[@]}" >"$work/summaries.json" 2>"$work/pipeline.log"
    ) || { tail -60 "$work/pipeline.log" >&2; fail "$label: the pipeline failed (log: $work/pipeline.log)"; }
    say "$label: pipeline (ingest -> caption -> embed -> experiment -> report) in $(secs "$t") s"
}

