"""Layer-streamed compression of Hugging Face causal LMs larger than RAM (``slimkit compress DIR --stream``).

The model is built on the meta device (no memory), the embeddings come in from the safetensors files,
and each decoder layer is read, calibrated, compressed, encoded for the slimkit format, checkpointed and
freed in turn (:mod:`slimkit.stream.runner`); the output directory is assembled from the checkpointed
layers without holding them all (:mod:`slimkit.stream.output`). What can stream is decided before any
weight is read (:mod:`slimkit.stream.support`), and so is the memory it needs (:mod:`slimkit.memory`).
"""
