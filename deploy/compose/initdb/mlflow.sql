-- Run once, when PostgreSQL's volume is new: MLflow gets a database of its own, beside the
-- Optuna studies' (POSTGRES_DB); both keep an alembic_version table.
CREATE DATABASE mlflow;
