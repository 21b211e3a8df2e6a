"""What the workflow steps do: the dataset snapshot, extraction, training (torch), evaluation, MLflow
tracking, promotion and roll-out."""
