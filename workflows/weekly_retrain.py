"""`weekly-retrain` (CronWorkflow): extraction then training, once a week, through the `extract` and
`train` templates of the two WorkflowTemplates (`templateRef`), so the steps are defined only there.
Its runs are workflows of their own: they report the workflow metrics under `weekly-retrain` (the
WorkflowTemplates' workflow-level metrics do not come with a `templateRef`; their steps' metrics do)."""

from hera.workflows import DAG, CronWorkflow, Task
from hera.workflows.models import TemplateRef

from workflows import defaults
from workflows.argo import arguments, inputs, output, pass_inputs, workflow_metrics


def build() -> CronWorkflow:
    """Mondays at 03:00 UTC; a run still going blocks the next (concurrencyPolicy Forbid)."""
    parameters = defaults.EXTRACT_PARAMETERS | defaults.TRAIN_PARAMETERS
    with (
        CronWorkflow(
            name="weekly-retrain",
            schedules=[defaults.WEEKLY_SCHEDULE],
            timezone="UTC",
            concurrency_policy="Forbid",
            starting_deadline_seconds=3600,  # a controller down at 03:00 still runs it within the hour
            entrypoint="retrain",
            service_account_name=defaults.SERVICE_ACCOUNT,
            arguments=arguments(parameters),
            metrics=workflow_metrics("weekly-retrain"),
        ) as cron,
        DAG(
            name="retrain",
            inputs=inputs(parameters),
            outputs=[
                output("summary", "{{tasks.extract-images.outputs.parameters.summary}}"),
                output("rollout", "{{tasks.train-model.outputs.parameters.rollout}}"),
            ],
        ),
    ):
        extract = Task(
            name="extract-images",
            template_ref=TemplateRef(name="extract-images", template="extract"),
            arguments=pass_inputs(defaults.EXTRACT_PARAMETERS),
        )
        train = Task(
            name="train-model",
            template_ref=TemplateRef(name="train-model", template="train"),
            arguments=pass_inputs(defaults.TRAIN_PARAMETERS),
        )
        extract >> train
    return cron
