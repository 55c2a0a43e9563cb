"""Pipeline steps: one module per step, plain functions with a thin Prefect @task wrapper."""
