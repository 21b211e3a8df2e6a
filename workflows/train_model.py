"""`train-model` (WorkflowTemplate): snapshot the dataset, train, audit the labels, evaluate, register,
promote through the quality gate, roll predict out onto the new champion.

Each step hands its result, grown by what it adds, to the next as a named output parameter (a JSON
object that Hera's runner writes to a file and Argo reads from there, never stdout: MLflow prints to
stdout when a run ends). Each step is a few lines over the library:
`workflows.lib.dataset` (the snapshot), `tracking` (MLflow: the training run, loading, the registry),
`audit` (the label audit), `evaluation`, `promotion` (the gate and publishing) and `rollout`. MLflow and
torch are imported inside the steps that use them, so that rendering the YAML needs neither.
Evaluation and promotion also write the figure their metric reports (the test accuracy, promoted or
rejected) as a scalar parameter of its own: an Argo metric cannot look inside a JSON parameter.
No `from __future__ import annotations` here: Hera reads the step signatures at render time.
"""

from collections import Counter
from typing import Annotated, Any

from hera.workflows import DAG, Parameter, Resources, WorkflowTemplate

from functions.lib.catalog import open_catalog
from functions.lib.config import Settings
from functions.lib.store import ObjectStore, open_store
from workflows import defaults
from workflows.argo import inputs, output, step, step_counter, step_gauge, workflow_template
from workflows.lib import dataset, rollout

# Each step's output: the result so far, as the named parameter the next step reads.
Snapshot = Annotated[dict[str, Any], Parameter(name="snapshot")]
Trained = Annotated[dict[str, Any], Parameter(name="trained")]
Audited = Annotated[dict[str, Any], Parameter(name="audited")]
Evaluated = Annotated[dict[str, Any], Parameter(name="evaluated")]
Registered = Annotated[dict[str, Any], Parameter(name="registered")]
Promoted = Annotated[dict[str, Any], Parameter(name="promoted")]
RolledOut = Annotated[dict[str, Any], Parameter(name="rollout")]
LabelsLeft = Annotated[dict[str, Any], Parameter(name="labels")]
TestAccuracy = Annotated[float, Parameter(name="test-accuracy")]
PromotionOutcome = Annotated[str, Parameter(name="outcome")]  # promoted or rejected


def _store() -> ObjectStore:
    return open_store(Settings.from_env().store_url)


@step(credentials=defaults.TRAIN_CREDENTIALS)
def snapshot_dataset() -> Snapshot:
    """Freeze the ingested rows into a manifest; the same rows give the same version."""
    settings = Settings.from_env()
    engine, store = open_catalog(settings.db_url), open_store(settings.store_url)
    version, examples, new_labels = dataset.snapshot(engine, store)
    splits = dict(Counter(e.split for e in examples))
    return {"dataset_version": version, "images": splits, "new_labels": new_labels}


# Training holds every resized image and the epoch's augmented batch in memory: ask for it.
@step(credentials=defaults.TRAIN_CREDENTIALS, resources=Resources(cpu_request=2, memory_request="3Gi"))
def train_model(
    snapshot: dict[str, Any], epochs: int = defaults.EPOCHS, seed: int = defaults.SEED
) -> Trained:
    """Train on the snapshot's train split, log everything to a new MLflow run, log the model (pyfunc)."""
    from workflows.lib import tracking

    backbone = Settings.from_env().backbone
    return snapshot | tracking.train_run(_store(), snapshot, backbone, epochs, seed)


@step(credentials=defaults.TRAIN_CREDENTIALS, resources=Resources(cpu_request=2, memory_request="2Gi"))
def audit_labels(trained: dict[str, Any], seed: int = defaults.SEED) -> Audited:
    """Find the images whose label looks wrong, log them to the run, queue them for an admin. Features
    come from the cache training filled; only the test split's are computed here, once."""
    from workflows.lib import audit

    settings = Settings.from_env()
    engine, store = open_catalog(settings.db_url), open_store(settings.store_url)
    result, queued = audit.review(engine, store, trained["dataset_version"], trained["run_id"], seed)
    return trained | {"suspects": len(result.suspects), "queued": queued}


@step(
    credentials=defaults.TRAIN_CREDENTIALS,
    metrics=[
        step_gauge(
            "dandelion_training_test_accuracy",
            "Test accuracy of the last trained candidate, on its frozen test split",
            "{{outputs.parameters.test-accuracy}}",
        )
    ],
)
def evaluate_model(audited: dict[str, Any]) -> tuple[Evaluated, TestAccuracy]:
    """Test metrics of the exported ONNX model (what will serve) on the frozen test split, to MLflow;
    beside the headline, accuracy on the test images the audit did not flag."""
    from workflows.lib import tracking
    from workflows.lib.evaluation import evaluate

    onnx_bytes, prep = tracking.load_model(audited["model_uri"])
    flagged = tracking.flagged(audited["run_id"])
    report = evaluate(onnx_bytes, prep, _store(), audited["dataset_version"], flagged, audited["temperature"])
    tracking.log_evaluation(audited["run_id"], report)
    return audited | {"metrics": report.metrics}, report.metrics["test_accuracy"]


@step()
def register_model(evaluated: dict[str, Any]) -> Registered:
    """Every candidate is registered; promotion decides which one serves."""
    from workflows.lib import tracking

    return evaluated | {"version": tracking.register(evaluated["model_uri"], evaluated["dataset_version"])}


@step(
    credentials=defaults.TRAIN_CREDENTIALS,
    metrics=[
        step_counter(
            "dandelion_promotions_total",
            "Candidates the quality gate judged, by outcome (promoted or rejected)",
            {"outcome": "{{outputs.parameters.outcome}}"},
        )
    ],
)
def promote_model(
    registered: dict[str, Any], min_accuracy: float = defaults.MIN_ACCURACY
) -> tuple[Promoted, PromotionOutcome]:
    """The gate: at least `min_accuracy`, and not below the champion re-evaluated on the same test split.
    A promoted version gets the registry's alias first; the pointer predict reads follows the alias."""
    from workflows.lib import promotion, tracking

    store = _store()
    candidate = tracking.model_version(registered["version"])
    decision = promotion.decide(store, candidate, tracking.champion(), min_accuracy)
    tracking.record_promotion(candidate.version, decision)
    if decision["promoted"]:
        promotion.publish_champion(store)
    return registered | decision, "promoted" if decision["promoted"] else "rejected"


@step(credentials=defaults.TRAIN_CREDENTIALS)
def count_labels_trained(promoted: dict[str, Any]) -> LabelsLeft:
    """The training succeeded: the labels its snapshot held no longer count towards the next one."""
    from functions.lib import retrain

    left = retrain.labels_trained(open_catalog(Settings.from_env().db_url), promoted["new_labels"])
    return {"new_labels_trained": promoted["new_labels"], "new_labels_left": left}


@step()
def roll_out(promoted: dict[str, Any]) -> RolledOut:
    """Move serving onto the new champion: on Knative, pin the predict Service to the version."""
    if not promoted["promoted"]:
        return {"version": promoted["version"], "rolled_out": False, "reason": promoted["reason"]}
    return {
        "version": promoted["version"],
        "rolled_out": True,
        "how": rollout.roll_out_predict(promoted["version"]),
    }


def build() -> WorkflowTemplate:
    with (
        # One training at a time, whatever starts it (the schedule, new labels, a quality alert).
        workflow_template("train-model", "train", defaults.TRAIN_PARAMETERS, one_at_a_time=True) as template,
        DAG(
            name="train",
            inputs=inputs(defaults.TRAIN_PARAMETERS),
            outputs=[output("rollout", "{{tasks.roll-out.outputs.parameters.rollout}}")],
        ),
    ):
        snapshot = snapshot_dataset()
        trained = train_model(
            arguments={
                "snapshot": snapshot.get_parameter("snapshot"),
                "epochs": "{{inputs.parameters.epochs}}",
                "seed": "{{inputs.parameters.seed}}",
            }
        )
        audited = audit_labels(
            arguments={"trained": trained.get_parameter("trained"), "seed": "{{inputs.parameters.seed}}"}
        )
        evaluated = evaluate_model(arguments={"audited": audited.get_parameter("audited")})
        registered = register_model(arguments={"evaluated": evaluated.get_parameter("evaluated")})
        promoted = promote_model(
            arguments={
                "registered": registered.get_parameter("registered"),
                "min_accuracy": "{{inputs.parameters.min-accuracy}}",
            }
        )
        rolled = roll_out(arguments={"promoted": promoted.get_parameter("promoted")})
        counted = count_labels_trained(arguments={"promoted": promoted.get_parameter("promoted")})
        snapshot >> trained >> audited >> evaluated >> registered >> promoted >> rolled >> counted
    return template
