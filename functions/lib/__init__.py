"""The library the functions and the workflow steps share: configuration, errors, the catalog, the object
store and its layout, image checks, preprocessing, the ONNX classifier, and each function's HTTP API.
Nothing here imports torch."""
