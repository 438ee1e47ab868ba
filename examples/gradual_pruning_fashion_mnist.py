"""Train LeNet-300-100 on Fashion-MNIST, prune it gradually to 90% while fine-tuning, evaluate and save.

The pruning controller rides along the training loop: ``ctl.step(progress)`` after every optimizer step
raises sparsity on Zhu & Gupta's cubic schedule, and the masks keep pruned weights at zero in between.
The saved model stores its sparse weights as bitmasks, so it is several times smaller on disk.

Run: flock /tmp/slimkit-heavy.lock python examples/gradual_pruning_fashion_mnist.py [OUT_DIR] [EPOCHS]
"""

import sys
import tempfile
from pathlib import Path

import torch

import slimkit
from slimkit.atomic import directory_bytes
from slimkit.data.images import fashion_mnist
from slimkit.eval.metrics import accuracy, weight_sparsity
from slimkit.models.bundle import ModelBundle
from slimkit.models.zoo import build_architecture
from slimkit.prune.gradual import GradualPruneConfig
from slimkit.train.classifier import TrainConfig, train_classifier

torch.set_num_threads(2)
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 8
x_train, y_train = fashion_mnist("train")
x_test, y_test = fashion_mnist("test")

torch.manual_seed(0)
model = build_architecture("lenet-300-100")
train_classifier(model, x_train, y_train, TrainConfig(epochs=epochs, lr=1e-3))
dense_accuracy = accuracy(model, x_test, y_test)

ctl = slimkit.prepare(model, GradualPruneConfig(final_sparsity=0.9, end=0.6, frequency=0.05, scope="global"))
train_classifier(model, x_train, y_train, TrainConfig(epochs=epochs, lr=3e-4, seed=1), on_step=ctl.step)
report = ctl.finalize()
pruned_accuracy = accuracy(model, x_test, y_test)

bundle = ModelBundle(model, "torch", "lenet-300-100", arch={"name": "lenet-300-100", "kwargs": {}})
out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()) / "lenet-90"
slimkit.save(bundle, out)
reloaded_accuracy = accuracy(slimkit.load_dir(out).model, x_test, y_test)
print(f"{report.method}: {report.stats}")
print(f"accuracy {dense_accuracy:.4f} -> {pruned_accuracy:.4f} (reloaded {reloaded_accuracy:.4f}); "
      f"sparsity {weight_sparsity(model):.3f}; saved {directory_bytes(out) / 1e3:.0f} kB to {out}")
