"""GoogLeNet (Inception v1) as torchvision builds it, so its weights map 1:1.

Differences from the 2014 paper that torchvision's released weights need:
a BatchNorm after every convolution (Conv2d without bias -> BN(eps 1e-3) ->
ReLU), a 3x3 convolution in the branch the paper calls "5x5", max-pools in
`ceil_mode`, and conv1 padded by 3 on every side. Layer names are the state
dict's module paths with "." -> "_" (e.g. "inception3a_branch2_1_conv"),
which keras_reid.tools.convert_googlenet relies on. The model's endpoints
"inception_4a" and "inception_4d" are the taps of the auxiliary heads.
"""

from __future__ import annotations

import keras

from keras_reid.models import layers as reid_layers

# Output channels of each branch: (1x1, 3x3 reduce, 3x3, "5x5" reduce,
# "5x5" (really 3x3), pool proj); the input width is the previous block's.
INCEPTION_CONFIGS = {
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}


def basic_conv(x, filters: int, kernel_size: int, *, name: str, strides: int = 1,
               padding: str = "valid"):
  """torchvision's BasicConv2d: Conv (no bias) -> BN(eps 1e-3) -> ReLU."""
  x = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding=padding,
                          use_bias=False, name=f"{name}_conv")(x)
  # Keras momentum 0.9 == torch momentum 0.1.
  x = keras.layers.BatchNormalization(epsilon=1e-3, momentum=0.9,
                                      name=f"{name}_bn")(x)
  return keras.layers.ReLU(name=f"{name}_relu")(x)


def inception(x, name: str):
  """One inception module; output channels = 1x1 + 3x3 + "5x5" + pool proj."""
  ch1, ch3r, ch3, ch5r, ch5, pool = INCEPTION_CONFIGS[name]
  b1 = basic_conv(x, ch1, 1, name=f"{name}_branch1")
  b2 = basic_conv(x, ch3r, 1, name=f"{name}_branch2_0")
  b2 = basic_conv(b2, ch3, 3, padding="same", name=f"{name}_branch2_1")
  b3 = basic_conv(x, ch5r, 1, name=f"{name}_branch3_0")
  # 3x3, not 5x5: torchvision's released weights have this shape.
  b3 = basic_conv(b3, ch5, 3, padding="same", name=f"{name}_branch3_1")
  # Stride 1, pad 1, ceil mode == "same" (padding never wins a max).
  b4 = keras.layers.MaxPooling2D(3, strides=1, padding="same",
                                 name=f"{name}_branch4_0")(x)
  b4 = basic_conv(b4, pool, 1, name=f"{name}_branch4_1")
  return keras.layers.Concatenate(name=f"{name[:-2]}_{name[-2:]}")([b1, b2, b3, b4])


def build_googlenet(input_shape: tuple[int, int, int], *, include_top: bool = False,
                    classes: int = 1000, name: str = "googlenet") -> keras.Model:
  """Builds Inception v1 (torchvision layout), without auxiliary classifiers.

  Args:
    input_shape: (H, W, 3); images normalised to [-1, 1] for torchvision's
      weights (the "tf" mode, see keras_reid.tools.convert_googlenet).
    include_top: add dropout 0.2 and the ImageNet classifier "fc".
    classes: classes of "fc".
    name: model name.

  Returns:
    keras.Model images [B, H, W, 3] -> {"feature": [B, 1024] (global average
    pool of inception5b), "aux1": inception_4a [B, H/16, W/16, 512],
    "aux2": inception_4d [B, H/16, W/16, 528]} (+ "logits" [B, classes] with
    include_top). Map sizes are ceil-rounded.
  """
  images = keras.Input(shape=input_shape, name="images")
  x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(images)
  x = basic_conv(x, 64, 7, strides=2, name="conv1")
  x = reid_layers.CeilMaxPooling2D(3, 2, name="maxpool1")(x)
  x = basic_conv(x, 64, 1, name="conv2")
  x = basic_conv(x, 192, 3, padding="same", name="conv3")
  x = reid_layers.CeilMaxPooling2D(3, 2, name="maxpool2")(x)
  x = inception(x, "inception3a")
  x = inception(x, "inception3b")
  x = reid_layers.CeilMaxPooling2D(3, 2, name="maxpool3")(x)
  x = aux1 = inception(x, "inception4a")
  x = inception(x, "inception4b")
  x = inception(x, "inception4c")
  x = aux2 = inception(x, "inception4d")
  x = inception(x, "inception4e")
  x = reid_layers.CeilMaxPooling2D(2, 2, name="maxpool4")(x)
  x = inception(x, "inception5a")
  x = inception(x, "inception5b")
  feature = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
  outputs = {"feature": feature, "aux1": aux1, "aux2": aux2}
  if include_top:
    x = keras.layers.Dropout(0.2, name="dropout")(feature)
    outputs["logits"] = keras.layers.Dense(classes, name="fc")(x)
  return keras.Model(images, outputs, name=name)
