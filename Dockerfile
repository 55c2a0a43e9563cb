# The image of the Kubernetes deployments (prefect.yaml k8s-*) and of the Dask workers they fan out to
# (README "Scale out"). NOT built or run on these machines (no container engine, no cluster): what is
# checked here is the job each deployment renders (tests/test_kubernetes.py), not this image.
#   docker build -t registry.example/fashion-sim:1 .                                (CPU)
#   docker build --build-arg TENSORFLOW="tensorflow[and-cuda]==2.21.0" -t ...-gpu .  (training on a GPU node)
FROM python:3.11-slim
ARG TENSORFLOW=""
WORKDIR /opt/fashion-sim
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt \
 && if [ -n "$TENSORFLOW" ]; then pip install --no-cache-dir "$TENSORFLOW"; fi
COPY storage storage
COPY tasks tasks
COPY flows flows
COPY ui ui
COPY prefect.yaml Makefile ./
# the flows run from here (the deployments' pull step); Dask workers import tasks/ and storage/ from here
ENV PYTHONPATH=/opt/fashion-sim PYTHONDONTWRITEBYTECODE=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
