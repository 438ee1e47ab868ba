"""Train LeNet-300-100 on Fashion-MNIST, fine-tune it with 4-bit quantization-aware training, evaluate, save.

QAT rides along a training loop: ``slimkit.prepare`` attaches fake-quant parametrizations (LSQ learnable
steps, int4 per output channel) and int8 input quantizers to every Linear; because they live inside the
model, the optimizer built afterwards from ``model.parameters()`` trains the steps too. ``ctl.step`` freezes
the activation ranges and steps for the last 10% of the run; ``ctl.finalize`` bakes int4 weights that the
slimkit format stores packed (4 bits per weight), with the int8 activation ranges as buffers. For
comparison the same float model is also quantized with plain round-to-nearest int4.

Run: flock /tmp/slimkit-heavy.lock python examples/qat_fashion_mnist.py [OUT_DIR] [EPOCHS]
"""

import copy
import sys
import tempfile
from pathlib import Path

import torch

import slimkit
from slimkit.atomic import directory_bytes
from slimkit.data.images import fashion_mnist
from slimkit.eval.metrics import accuracy
from slimkit.models.bundle import ModelBundle
from slimkit.models.zoo import build_architecture
from slimkit.quantize.qat import QATConfig
from slimkit.train.classifier import TrainConfig, train_classifier

torch.set_num_threads(2)
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 2
x_train, y_train = fashion_mnist("train")
x_test, y_test = fashion_mnist("test")

torch.manual_seed(0)
model = build_architecture("lenet-300-100")
train_classifier(model, x_train, y_train, TrainConfig(epochs=epochs, lr=1e-3))
float_accuracy = accuracy(model, x_test, y_test)

rtn_model = copy.deepcopy(model)
slimkit.apply(rtn_model, slimkit.RTNConfig(bits=4))
rtn_accuracy = accuracy(rtn_model, x_test, y_test)

ctl = slimkit.prepare(model, QATConfig(bits=4, learnable_scales=True, activation_bits=8, activation_symmetric=False,
                                       freeze_at=0.9))
train_classifier(model, x_train, y_train, TrainConfig(epochs=1, lr=3e-4, seed=1), on_step=ctl.step)
report = ctl.finalize()
qat_accuracy = accuracy(model, x_test, y_test)

bundle = ModelBundle(model, "torch", "lenet-300-100", arch={"name": "lenet-300-100", "kwargs": {}})
out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()) / "lenet-qat-int4"
slimkit.save(bundle, out)
reloaded_accuracy = accuracy(slimkit.load_dir(out).model, x_test, y_test)
print(f"{report.method}: {report.stats}")
print(f"accuracy: float {float_accuracy:.4f}, RTN int4 {rtn_accuracy:.4f}, QAT int4 weights + int8 inputs "
      f"{qat_accuracy:.4f} (reloaded {reloaded_accuracy:.4f}); saved {directory_bytes(out) / 1e3:.0f} kB to {out}")
