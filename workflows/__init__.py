"""Dandelion's Argo workflows, one Hera module per Argo object (`extract_images`, `train_model`,
`weekly_retrain`), with the steps they run. What the steps do is in `workflows.lib`; what only runs on
one machine (the `dandelion` command, the local Argo runner, the processes of `make up`) is in
`workflows.local`, apart from what the workflow image needs."""
