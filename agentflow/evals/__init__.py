"""Evaluations: run a workflow (or one node) over a dataset, score with MLflow GenAI scorers, log to MLflow.

dataset.py reads cases, target.py says what a case runs, runner.py runs them, scorers.py and judge.py
score them, mlflow_log.py logs them, report.py sums them up, evaluate.py puts it together
(`agentflow eval`, the Evaluate tab; docs/evaluate.md).
"""
