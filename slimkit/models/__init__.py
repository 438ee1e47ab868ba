"""Model loading and saving: torch modules, Hugging Face directories, GGUF, sentence-transformers."""

from slimkit.models.bundle import ModelBundle, ModelKind
from slimkit.models.loading import load_model
from slimkit.models.packaged import PACKAGED_MODELS, packaged_model_path
from slimkit.models.torch_io import load_torch_weights, torch_bundle
from slimkit.models.zoo import architecture_names, build_architecture, register_architecture

__all__ = ["ModelBundle", "ModelKind", "load_model", "PACKAGED_MODELS", "packaged_model_path",
           "architecture_names", "build_architecture", "register_architecture", "load_torch_weights", "torch_bundle"]
