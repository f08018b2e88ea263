# captionrec for the image route of spark-submit (README "Run with spark-submit"; Kubernetes: conf/spark-k8s-gpu.conf).
#
#   docker build -t registry.example.com/captionrec:0.1.0 .      # or: podman build -t ... .   (from the repo root)
#
# What the image holds, at the paths the Spark properties files name:
#   /opt/spark           Apache Spark 4.2.0 (bin-hadoop3, Scala 2.13), the release of the pinned pyspark==4.2.0, with
#                        examples/src/main/scripts/getGpusResources.sh (spark.executor.resource.gpu.discoveryScript)
#                        and Spark's Kubernetes entrypoint (/opt/entrypoint.sh, run under tini)
#   /opt/captionrec      the Python environment: the captionrec wheel [local,delta-spark] installed with
#                        -c constraints.txt, torch replaced by the CUDA build TORCH_SPEC (spark.pyspark.python =
#                        spark.pyspark.driver.python = /opt/captionrec/bin/python)
#   /opt/captionrec/jobs jobs/<stage>.py (cluster mode: local:///opt/captionrec/jobs/<stage>.py)
#   /models/hf           HF_HOME, empty: mount pre-staged weights there (no weights are baked in) and keep the stages'
#                        local_files_only: true (set HF_HUB_OFFLINE=1 in the pods' environment to forbid downloads)
# Java 17 (OpenJDK), Python 3.12 (Ubuntu 24.04's, the Python of the Databricks runtime the bundle targets), user
# spark (uid 185, Spark's images' uid), working directory /opt/spark/work-dir.
#
# Base: nvidia/cuda:13.0.2-base-ubuntu24.04. torch==2.14.1 from PyPI is the CUDA 13.0 build (torch.version.cuda
# "13.0") and brings its own CUDA libraries as nvidia-* wheels, so the CUDA "base" flavour (driver-facing variables
# NVIDIA_VISIBLE_DEVICES / NVIDIA_DRIVER_CAPABILITIES / NVIDIA_REQUIRE_CUDA for the NVIDIA container runtime) is
# enough; nodes need a driver for CUDA 13.0 (R580 or newer). For older drivers build with another CUDA build, e.g.
#   --build-arg TORCH_SPEC=torch==2.14.1 --build-arg TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cu126"
# The build stops if the installed torch is a CPU-only build (scripts/check_pack_env.py --profile gpu), the same
# check `make pack-env` runs. Linted in CI: tests/test_dockerfile.py (hadolint, .hadolint.yaml).

ARG SPARK_VERSION=4.2.0

# -- Ubuntu 24.04 + CUDA variables + Java 17 + Python 3.12 ----------------------------------------------------
FROM nvidia/cuda:13.0.2-base-ubuntu24.04 AS base
ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates openjdk-17-jre-headless procps python3.12 python3.12-venv tini \
    && rm -rf /var/lib/apt/lists/*

# -- Spark: the release tarball, checked against Apache's published SHA-512 ------------------------------------
FROM base AS spark
ARG SPARK_VERSION
ARG SPARK_MIRROR=https://archive.apache.org/dist/spark
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /tmp/spark
# Apache's .sha512 file is either "<hex>  <file>" or GnuPG's "<file>: <HEX HEX ...>": the check keeps the hex digits
RUN tgz="spark-${SPARK_VERSION}-bin-hadoop3.tgz" \
    && curl -fsSLO "${SPARK_MIRROR}/spark-${SPARK_VERSION}/${tgz}" \
    && curl -fsSLO "${SPARK_MIRROR}/spark-${SPARK_VERSION}/${tgz}.sha512" \
    && expected="$(tr -d '[:space:]' < "${tgz}.sha512" | sed -e 's/^.*://' -e 's/spark-.*$//' | tr 'A-F' 'a-f')" \
    && echo "${expected}  ${tgz}" | sha512sum -c - \
    && mkdir -p /opt/spark \
    && tar -xzf "${tgz}" -C /opt/spark --strip-components=1 \
    && test -x /opt/spark/examples/src/main/scripts/getGpusResources.sh \
    && rm -rf /tmp/spark

# -- the Python environment: the wheel with constraints.txt, CUDA torch -----------------------------------------
FROM base AS env
ARG TORCH_SPEC=torch==2.14.1
ARG TORCH_PIP_ARGS=""
WORKDIR /src
COPY setup.py README.md constraints.txt ./
COPY lib ./lib
COPY conf ./conf
COPY scripts/check_pack_env.py ./scripts/
# constraints.txt pins the local CPU torch (2.13.0): the image takes TORCH_SPEC instead, every other pin as it is
RUN grep -v '^torch==' constraints.txt > /tmp/constraints-image.txt \
    && echo "${TORCH_SPEC}" >> /tmp/constraints-image.txt \
    && python3.12 -m venv /opt/captionrec \
    && /opt/captionrec/bin/pip install -c /tmp/constraints-image.txt ${TORCH_PIP_ARGS} "${TORCH_SPEC}" \
    && /opt/captionrec/bin/pip wheel --no-deps -w /tmp/dist . \
    && set -- /tmp/dist/captionrec-*.whl \
    && /opt/captionrec/bin/pip install -c /tmp/constraints-image.txt "$1[local,delta-spark]" \
    && /opt/captionrec/bin/python scripts/check_pack_env.py --python /opt/captionrec/bin/python --profile gpu \
    && rm -rf /tmp/dist /tmp/constraints-image.txt
COPY jobs /opt/captionrec/jobs

# -- the image ----------------------------------------------------------------------------------------------
FROM base
ARG SPARK_VERSION
ENV SPARK_HOME=/opt/spark \
    PATH=/opt/captionrec/bin:/opt/spark/bin:${PATH} \
    PYSPARK_PYTHON=/opt/captionrec/bin/python \
    PYSPARK_DRIVER_PYTHON=/opt/captionrec/bin/python \
    HF_HOME=/models/hf
COPY --from=spark /opt/spark /opt/spark
COPY --from=env /opt/captionrec /opt/captionrec
RUN cp /opt/spark/kubernetes/dockerfiles/spark/entrypoint.sh /opt/entrypoint.sh \
    && cp /opt/spark/kubernetes/dockerfiles/spark/decom.sh /opt/decom.sh \
    && chmod 0755 /opt/entrypoint.sh /opt/decom.sh \
    && groupadd --gid 185 spark \
    && useradd --uid 185 --gid 185 --create-home --home-dir /home/spark --shell /bin/bash spark \
    && mkdir -p /opt/spark/work-dir /models/hf \
    && chown spark:spark /opt/spark/work-dir /models/hf \
    && pyspark_version="$(/opt/captionrec/bin/python -c 'import pyspark; print(pyspark.__version__)')" \
    && if [ "${pyspark_version}" != "${SPARK_VERSION}" ]; then \
        echo "pyspark ${pyspark_version} in /opt/captionrec but Spark ${SPARK_VERSION} in /opt/spark: set SPARK_VERSION to the pyspark pin of constraints.txt" >&2; \
        exit 1; \
    fi
WORKDIR /opt/spark/work-dir
USER 185:185
ENTRYPOINT ["/opt/entrypoint.sh"]
