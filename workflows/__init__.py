"""Dandelion's Argo workflows (Hera), their steps, the local runner and the `dandelion` command."""
