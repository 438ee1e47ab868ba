"""slimkit: make trained neural networks smaller and faster, and measure what was lost.

Public surface::

    report = slimkit.apply(model, slimkit.RTNConfig(bits=8))          # one-shot method
    ctl = slimkit.prepare(model, config); ctl.step(p); ctl.finalize()  # training-time method
    slimkit.apply_with_training(model, [config], train)                # ... around a train(model, on_step)
    slimkit.save(bundle, "out/"); bundle = slimkit.load("out/")
"""

import slimkit.builtin_methods  # noqa: F401 - registers the built-in methods
from slimkit.api import Controller, apply, apply_with_training, prepare
from slimkit.cluster.finetune import CentroidFinetuneConfig
from slimkit.cluster.huffman_step import HuffmanConfig
from slimkit.cluster.weight_sharing import KMeansClusterConfig
from slimkit.config import BaseConfig, Targets
from slimkit.distill.depth import DropLayersConfig
from slimkit.export.slimkit_format import load_slimkit_dir as load_dir
from slimkit.export.slimkit_format import save
from slimkit.method import StepReport, registered_names
from slimkit.models import ModelBundle, load_model
from slimkit.pipeline import compress
from slimkit.prune.gradual import GradualPruneConfig
from slimkit.prune.magnitude import MagnitudePruneConfig
from slimkit.prune.nm_prune import NMPruneConfig
from slimkit.prune.sparsegpt import SparseGPTConfig
from slimkit.prune.structured.method import StructuredPruneConfig
from slimkit.prune.wanda import WandaConfig
from slimkit.quantize.awq import AWQConfig
from slimkit.quantize.gptq import GPTQConfig
from slimkit.quantize.pack_method import PackConfig
from slimkit.quantize.qat import QATConfig
from slimkit.quantize.rtn import RTNConfig
from slimkit.quantize.smoothquant import SmoothQuantConfig
from slimkit.quantize.static import StaticQuantConfig
from slimkit.recipe import Recipe, load_recipe
from slimkit.train.finetune import FinetuneConfig

load = load_model

__version__ = "0.1.0"
__all__ = [
    "apply", "apply_with_training", "prepare", "Controller", "StepReport", "BaseConfig", "Targets", "save",
    "load", "load_dir", "load_model", "ModelBundle", "compress", "Recipe", "load_recipe", "registered_names",
    "MagnitudePruneConfig", "RTNConfig", "GPTQConfig", "AWQConfig", "SparseGPTConfig", "WandaConfig",
    "GradualPruneConfig", "NMPruneConfig", "StructuredPruneConfig", "PackConfig", "QATConfig",
    "SmoothQuantConfig", "StaticQuantConfig", "KMeansClusterConfig", "CentroidFinetuneConfig", "HuffmanConfig",
    "FinetuneConfig", "DropLayersConfig",
]
