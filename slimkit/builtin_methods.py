"""Imports every built-in method module and format plug-in so that their registrations run.

Registration is explicit: a method exists for recipes and ``list-methods`` once its module is listed
here, and the slimkit format can store a family's tensors and rebuild its modules once the module that
registers its codec or module restorer (:mod:`slimkit.export.registry`) is listed here. This is the one
module that knows every family; ``slimkit/__init__.py`` imports it, so importing any part of slimkit
fills the registries. One import per line, sorted; format plug-ins say what they register.
"""

# ruff: noqa: F401
import slimkit.cluster.codebook_codec  # format: codebook codec
import slimkit.cluster.finetune
import slimkit.cluster.huffman_codec  # format: huffman codec
import slimkit.cluster.huffman_step
import slimkit.cluster.weight_sharing
import slimkit.distill.depth
import slimkit.export.compressed_tensors_export  # export format: compressed-tensors
import slimkit.export.gguf_export  # export format: gguf
import slimkit.export.litert  # export format: litert
import slimkit.export.onnx.format  # export format: onnx
import slimkit.export.slimkit_format  # format: dense/bitmask codecs, the slimkit-output loader
import slimkit.models.layer_chain  # architecture: layer-chain (models converted from Keras / TensorFlow)
import slimkit.prune.gradual
import slimkit.prune.magnitude
import slimkit.prune.nm_prune
import slimkit.prune.sparsegpt
import slimkit.prune.structured.method
import slimkit.prune.wanda
import slimkit.quantize.activation  # format: static-quant-linear module restorer
import slimkit.quantize.awq
import slimkit.quantize.gptq
import slimkit.quantize.int_codec  # format: int codec
import slimkit.quantize.pack_method
import slimkit.quantize.packed  # format: packed module restorer and header section
import slimkit.quantize.qat
import slimkit.quantize.rtn
import slimkit.quantize.smoothquant
import slimkit.quantize.static
import slimkit.train.finetune
