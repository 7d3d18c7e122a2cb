"""A user's own data: a function of no arguments returning arrays.

``config.data.source = "experiments.examples.my_data:digits"``. The launcher
calls it once and splits a validation set off the training arrays
(``config.data.val_fraction``, seeded and stratified); the test arrays
returned here are used as they are.
"""

import numpy as np
from sklearn import datasets


def digits():
  """scikit-learn's 8x8 digits (shipped with it: no download) as the user's own arrays.

  Returns:
    ``(x_train, y_train, x_test, y_test)``: uint8 images ``[N, 8, 8, 1]`` and
    int labels; the last 297 images are the test split.
  """
  d = datasets.load_digits()
  x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  y = d.target.astype(np.int32)
  return x[:1500], y[:1500], x[1500:], y[1500:]
