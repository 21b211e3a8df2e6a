"""Local-only tooling, never in the workflow image: the `dandelion` command, the runner that executes
the rendered Argo manifests on this machine, and the processes of the local stack (`make up`)."""
