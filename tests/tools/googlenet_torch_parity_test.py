"""Where torch and torchvision are importable: same weights, same outputs.

Skipped otherwise (the project does not depend on PyTorch).
"""

import numpy as np
import pytest


from keras_reid.models import torch_state_dict
from keras_reid.tools import googlenet_conversion


def test_keras_port_matches_torchvision(tmp_path):
  # Skipped inside the test (not at import) so that a run with nothing to
  # execute still reports one skipped test rather than "no tests".
  torch = pytest.importorskip("torch")
  torchvision = pytest.importorskip("torchvision")
  torch.manual_seed(0)
  reference = torchvision.models.googlenet(
      weights=None, aux_logits=False, init_weights=True, transform_input=False)
  for module in reference.modules():
    if isinstance(module, torch.nn.BatchNorm2d):  # non-trivial statistics
      module.running_mean.uniform_(-0.5, 0.5)
      module.running_var.uniform_(0.5, 2.0)
      module.weight.data.uniform_(0.5, 1.5)
      module.bias.data.uniform_(-0.2, 0.2)
  reference.eval()
  path = str(tmp_path / "googlenet.pth")
  torch.save(reference.state_dict(), path)
  model, unused = googlenet_conversion.convert(
      torch_state_dict.load_state_dict(path), include_top=True)
  assert not unused
  x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype("float32")
  with torch.no_grad():
    expected = reference(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
  got = np.asarray(model(x, training=False)["logits"])
  np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q"]))
