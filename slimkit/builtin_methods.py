"""Imports every built-in method module so that its ``@register`` runs.

Registration is explicit: a method exists for recipes and ``list-methods`` once its module is listed
here. One import per line, grouped by family.
"""

# ruff: noqa: F401
import slimkit.prune.gradual
import slimkit.prune.magnitude
import slimkit.prune.nm_prune
import slimkit.prune.sparsegpt
import slimkit.prune.structured.method
import slimkit.prune.wanda
import slimkit.quantize.awq
import slimkit.quantize.gptq
import slimkit.quantize.pack_method
import slimkit.quantize.qat
import slimkit.quantize.rtn
import slimkit.quantize.smoothquant
import slimkit.quantize.static
