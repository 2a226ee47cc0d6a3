"""Synthetic pedestrians and cameras, drawn with Pillow.

Each identity is a parametric person (body proportions, skin and hair, top and
bottom garments with colours and patterns, shoes, bag or backpack, hat);
attributes come from small palettes so identities share some of them and no
single colour separates them. Each camera has its own imaging: background
scene, illumination and colour cast, blur, noise, resolution, viewpoint mix
(front / back / side: a backpack shows from behind, a logo from the front),
box jitter and partial occlusion. A `domain` selects a second style (other
cameras, scenes, conditions and clothing statistics) for transfer and
unsupervised-adaptation experiments.

Everything is drawn from the generator passed in; generator.py seeds them.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image
from PIL import ImageChops
from PIL import ImageDraw
from PIL import ImageFilter

# Clothing palettes (RGB). Small on purpose: identities share colours.
_TOP_COLOURS = np.array([
    (200, 30, 30), (30, 60, 170), (240, 240, 235), (25, 25, 28), (90, 90, 95),
    (40, 130, 60), (230, 200, 40), (240, 130, 170), (120, 60, 150),
    (250, 140, 30), (110, 170, 220), (140, 95, 60), (0, 130, 130),
    (180, 180, 170)], np.float32)
_BOTTOM_COLOURS = np.array([
    (30, 40, 80), (20, 20, 22), (110, 110, 115), (190, 175, 140),
    (70, 90, 140), (90, 60, 40), (230, 230, 225), (60, 80, 50)], np.float32)
_SKIN = np.array([(240, 205, 180), (225, 180, 145), (195, 145, 105),
                  (150, 100, 70), (100, 70, 50)], np.float32)
_HAIR = np.array([(20, 15, 10), (70, 45, 25), (140, 100, 50), (200, 170, 110),
                  (130, 130, 130), (110, 30, 20)], np.float32)
_SHOES = np.array([(20, 20, 20), (240, 240, 240), (100, 60, 30),
                   (60, 60, 140), (150, 30, 30)], np.float32)
_BAGS = np.array([(20, 20, 20), (60, 40, 30), (150, 30, 40), (40, 70, 140),
                  (200, 200, 195), (210, 120, 40), (50, 100, 60)], np.float32)

# Domain styles (the domains are its keys): clothing preferences and camera
# ranges.
DOMAIN_STYLE = {
    "a": dict(num_cameras=6, top_bias=None, gain=(0.75, 1.25),
              cast=0.12, blur=(0.0, 0.9), noise=(2., 8.), scales=(1., .75, .6),
              scene_value=(90, 200), occlusion=(0.05, 0.25)),
    "b": dict(num_cameras=2, top_bias=(3, 4, 1, 0, 11, 13), gain=(0.5, 1.0),
              cast=0.2, blur=(0.4, 1.3), noise=(5., 12.), scales=(.75, .5),
              scene_value=(40, 140), occlusion=(0.15, 0.35)),
}

FRONT, BACK, SIDE = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class Person:
  """Parameters of one identity (colours are float RGB triples)."""
  height: float          # fraction of the box height
  build: float           # shoulder width multiplier
  torso: float           # torso length fraction
  skin: tuple[int, int, int]
  hair: tuple[int, int, int]
  hair_long: bool
  hat: tuple[int, int, int] | None
  top: tuple[int, int, int]
  top2: tuple[int, int, int]  # pattern / inner shirt colour
  pattern: str           # plain, stripes, checks, logo, jacket
  stripe: int            # stripe / check period in pixels at 128 px height
  long_sleeves: bool
  bottom: tuple[int, int, int]
  bottom_kind: str       # trousers, shorts, skirt
  shoes: tuple[int, int, int]
  bag: str               # none, backpack, shoulder, hand
  bag_colour: tuple[int, int, int]


@dataclasses.dataclass(frozen=True)
class Camera:
  """Imaging conditions of one camera."""
  views: np.ndarray      # probabilities of front, back, side
  gain: float
  cast: np.ndarray       # per-channel multipliers
  blur: float
  noise: float
  scale: float           # render resolution factor (then upsampled)
  occlusion: float       # probability of a partial occluder
  scene: np.ndarray      # uint8 [H, 4W, 3] background canvas
  # Sensor noise (positive and negative parts, uint8 [2H, 2W, 3] images),
  # cropped at random per image: fast and seeded.
  noise_pos: Image.Image | None = None
  noise_neg: Image.Image | None = None


def _jitter(rng: np.random.Generator, colour: np.ndarray, amount: float
            ) -> tuple[int, int, int]:
  r, g, b = np.clip(colour + rng.normal(0., amount, 3), 0, 255)
  return (int(r), int(g), int(b))


def _pick(rng: np.random.Generator, palette: np.ndarray,
          bias: tuple[int, ...] | None = None) -> np.ndarray:
  if bias is not None and rng.uniform() < 0.5:
    return palette[bias[rng.integers(len(bias))]]
  return palette[rng.integers(len(palette))]


def sample_person(rng: np.random.Generator, domain: str) -> Person:
  """Draws one identity's parameters."""
  style = DOMAIN_STYLE[domain]
  top = _jitter(rng, _pick(rng, _TOP_COLOURS, style["top_bias"]), 12)
  top2 = _jitter(rng, _pick(rng, _TOP_COLOURS), 12)
  while np.abs(np.subtract(top2, top)).sum() < 120:
    top2 = _jitter(rng, _pick(rng, _TOP_COLOURS), 12)
  bag = rng.choice(["none", "backpack", "shoulder", "hand"],
                   p=[0.4, 0.3, 0.2, 0.1])
  return Person(
      height=rng.uniform(0.86, 1.0),
      build=rng.uniform(0.82, 1.18),
      torso=rng.uniform(0.31, 0.38),
      skin=_jitter(rng, _pick(rng, _SKIN), 8),
      hair=_jitter(rng, _pick(rng, _HAIR), 8),
      hair_long=bool(rng.uniform() < 0.35),
      hat=(_jitter(rng, _pick(rng, _TOP_COLOURS), 10)
           if rng.uniform() < 0.15 else None),
      top=top, top2=top2,
      pattern=str(rng.choice(["plain", "stripes", "checks", "logo", "jacket"],
                             p=[0.35, 0.2, 0.1, 0.2, 0.15])),
      stripe=int(rng.integers(4, 9)),
      long_sleeves=bool(rng.uniform() < 0.5),
      bottom=_jitter(rng, _pick(rng, _BOTTOM_COLOURS), 10),
      bottom_kind=str(rng.choice(["trousers", "shorts", "skirt"],
                                 p=[0.7, 0.18, 0.12])),
      shoes=_jitter(rng, _pick(rng, _SHOES), 10),
      bag=str(bag),
      bag_colour=_jitter(rng, _pick(rng, _BAGS), 10))


def _make_scene(rng: np.random.Generator, domain: str, h: int, w: int
                ) -> np.ndarray:
  """A camera's background canvas, 4 boxes wide; boxes crop it."""
  style = DOMAIN_STYLE[domain]
  lo, hi = style["scene_value"]
  base = rng.uniform(lo, hi, 3)
  img = Image.new("RGB", (4 * w, h), tuple(int(c) for c in base))
  draw = ImageDraw.Draw(img)
  floor_y = int(h * rng.uniform(0.7, 0.88))
  floor = np.clip(base * rng.uniform(0.6, 1.1) + rng.normal(0, 15, 3), 0, 255)
  draw.rectangle([0, floor_y, 4 * w, h], fill=tuple(int(c) for c in floor))
  for _ in range(rng.integers(12, 30)):
    x0 = rng.uniform(0, 4 * w)
    y0 = rng.uniform(0, floor_y)
    bw, bh = rng.uniform(3, w * 0.8), rng.uniform(3, h * 0.5)
    c = np.clip(base + rng.normal(0, 35, 3), 0, 255)
    draw.rectangle([x0, y0, x0 + bw, y0 + bh], fill=tuple(int(v) for v in c))
  for _ in range(rng.integers(2, 6)):  # poles and door frames
    x0 = rng.uniform(0, 4 * w)
    c = np.clip(base + rng.normal(0, 50, 3), 0, 255)
    draw.rectangle([x0, 0, x0 + rng.uniform(1, 5), floor_y],
                   fill=tuple(int(v) for v in c))
  return np.asarray(img)


def sample_camera(rng: np.random.Generator, domain: str, h: int, w: int
                  ) -> Camera:
  """Draws one camera's imaging conditions."""
  style = DOMAIN_STYLE[domain]
  return Camera(
      views=rng.dirichlet([1.5, 1.5, 1.0]),
      gain=rng.uniform(*style["gain"]),
      cast=1. + rng.uniform(-style["cast"], style["cast"], 3),
      blur=rng.uniform(*style["blur"]),
      noise=rng.uniform(*style["noise"]),
      scale=float(rng.choice(style["scales"])),
      occlusion=rng.uniform(*style["occlusion"]),
      scene=_make_scene(rng, domain, h, w))


def with_noise(camera: Camera, rng: np.random.Generator) -> Camera:
  """`camera` with its sensor noise field drawn (see Camera.noise_pos)."""
  h, w = camera.scene.shape[0], camera.scene.shape[1] // 4
  field = np.round(rng.standard_normal((2 * h, 2 * w, 3)) * camera.noise)
  field = np.clip(field, -255, 255)
  return dataclasses.replace(
      camera,
      noise_pos=Image.fromarray(np.maximum(field, 0).astype(np.uint8)),
      noise_neg=Image.fromarray(np.maximum(-field, 0).astype(np.uint8)))


def _c(colour, shade: float = 1.) -> tuple[int, int, int]:
  # Plain Python: this runs ~25 times per image and numpy is slow on 3 values.
  if shade == 1.:
    return colour
  r, g, b = colour
  return (min(255, int(r * shade)), min(255, int(g * shade)),
          min(255, int(b * shade)))


def _draw_person(draw: ImageDraw.ImageDraw, p: Person, view: int,
                 rng: np.random.Generator, h: int, w: int) -> None:
  """Draws person `p` seen from `view` into a (h, w) box."""
  ph = h * p.height * rng.uniform(0.88, 0.98)
  top_y = (h - ph) / 2 + rng.uniform(-0.04, 0.04) * h
  cx = w / 2 + rng.uniform(-0.08, 0.08) * w
  u = ph / 128.  # pixels per unit of a 128-px-tall person
  side = view == SIDE
  sw = 17 * p.build * u * (0.62 if side else 1.)   # half shoulder width
  head_h, head_w = 15 * u, 6 * u * (1.05 if side else 1.)
  neck_y = top_y + head_h + 1.5 * u
  hip_y = neck_y + p.torso * ph
  foot_y = top_y + ph
  phase = rng.uniform(-1, 1)  # walking phase: stride and arm swing
  shade = 0.8  # far limbs are darker

  # Bag behind the body (side view backpack sticks out behind).
  if p.bag == "backpack" and side:
    draw.rectangle([cx - sw - 7 * u, neck_y + 3 * u, cx - sw + 2 * u,
                    neck_y + 0.75 * (hip_y - neck_y)], fill=_c(p.bag_colour))
  # Legs.
  leg_w = sw * (0.9 if side else 0.42)
  if side:
    stride = 9 * u * phase
    for sgn, sh in ((-1, shade), (1, 1.)):
      draw.polygon([(cx - leg_w / 2, hip_y), (cx + leg_w / 2, hip_y),
                    (cx + sgn * stride + leg_w / 3, foot_y),
                    (cx + sgn * stride - leg_w / 3, foot_y)],
                   fill=_c(p.bottom, sh))
      draw.rectangle([cx + sgn * stride - leg_w / 3, foot_y - 3 * u,
                      cx + sgn * stride + leg_w / 2 + 2 * u, foot_y],
                     fill=_c(p.shoes))
    legs_x = [(cx - leg_w / 2, cx + leg_w / 2)]
  else:
    gap = 1.5 * u + 2 * u * abs(phase)
    legs_x = [(cx - gap / 2 - leg_w, cx - gap / 2),
              (cx + gap / 2, cx + gap / 2 + leg_w)]
    for x0, x1 in legs_x:
      draw.rectangle([x0, hip_y, x1, foot_y], fill=_c(p.bottom))
      draw.rectangle([x0 - 0.5 * u, foot_y - 3 * u, x1 + 0.5 * u, foot_y],
                     fill=_c(p.shoes))
  # Shorts and skirts show skin below.
  if p.bottom_kind != "trousers":
    knee = hip_y + (0.42 if p.bottom_kind == "shorts" else 0.5) * (
        foot_y - hip_y)
    for x0, x1 in legs_x:
      draw.rectangle([x0 + u, knee, x1 - u, foot_y - 3 * u], fill=_c(p.skin))
    if p.bottom_kind == "skirt":
      draw.polygon([(cx - sw * 0.8, hip_y), (cx + sw * 0.8, hip_y),
                    (cx + sw * 1.1, knee), (cx - sw * 1.1, knee)],
                   fill=_c(p.bottom))
  # Arms (sleeve then skin for short sleeves).
  arm_w = 4.5 * u
  arm_end = hip_y + 4 * u
  swing = 4 * u * phase
  arms = ([(cx - arm_w / 2 + swing, 1.)] if side else
          [(cx - sw - arm_w + 0.5 * u, 1.), (cx + sw - 0.5 * u, 1.)])
  for ax, sh in arms:
    draw.rectangle([ax, neck_y + u, ax + arm_w, arm_end], fill=_c(p.top, sh))
    if not p.long_sleeves:
      draw.rectangle([ax, neck_y + 0.4 * (arm_end - neck_y), ax + arm_w,
                      arm_end], fill=_c(p.skin, sh))
    draw.rectangle([ax, arm_end, ax + arm_w, arm_end + 3 * u],
                   fill=_c(p.skin, sh))
  # Torso and its pattern.
  tx0, tx1 = cx - sw, cx + sw
  draw.rectangle([tx0, neck_y, tx1, hip_y], fill=_c(p.top))
  period = max(2., p.stripe * u)
  if p.pattern == "stripes":
    y = neck_y + period / 2
    while y < hip_y - 1:
      draw.rectangle([tx0, y, tx1, min(y + period / 2, hip_y)],
                     fill=_c(p.top2))
      y += period
  elif p.pattern == "checks":
    y, row = neck_y, 0
    while y < hip_y - 1:
      x = tx0 + (row % 2) * period / 2
      while x < tx1 - 1:
        draw.rectangle([x, y, min(x + period / 2, tx1),
                        min(y + period / 2, hip_y)], fill=_c(p.top2))
        x += period
      y += period / 2
      row += 1
  elif p.pattern == "logo" and view == FRONT:
    r = 4.5 * u
    ly = neck_y + 0.38 * (hip_y - neck_y)
    draw.ellipse([cx - r, ly - r, cx + r, ly + r], fill=_c(p.top2))
  elif p.pattern == "jacket" and view == FRONT:
    draw.rectangle([cx - 3 * u, neck_y, cx + 3 * u, hip_y], fill=_c(p.top2))
  if side:  # the near arm goes over the torso: drawn again after it
    ax = cx - arm_w / 2 + swing
    draw.rectangle([ax, neck_y + u, ax + arm_w, arm_end], fill=_c(p.top, .9))
    draw.rectangle([ax, arm_end, ax + arm_w, arm_end + 3 * u],
                   fill=_c(p.skin))
  # Bags in front of / over the torso.
  if p.bag == "backpack":
    if view == BACK:
      draw.rectangle([cx - 0.75 * sw, neck_y + 2 * u, cx + 0.75 * sw,
                      neck_y + 0.8 * (hip_y - neck_y)], fill=_c(p.bag_colour))
    elif view == FRONT:
      for sx in (cx - 0.55 * sw, cx + 0.55 * sw - 2 * u):
        draw.rectangle([sx, neck_y, sx + 2 * u, neck_y + 0.55 * (
            hip_y - neck_y)], fill=_c(p.bag_colour))
  elif p.bag == "shoulder":
    if not side:
      draw.line([(cx - sw + u, neck_y + u), (cx + sw, hip_y - 2 * u)],
                fill=_c(p.bag_colour), width=max(1, int(2 * u)))
    bx = cx - 4 * u if side else cx + sw - 3 * u
    draw.rectangle([bx, hip_y - 6 * u, bx + 9 * u, hip_y + 5 * u],
                   fill=_c(p.bag_colour))
  elif p.bag == "hand":
    hx = arms[-1][0] if not side else cx + swing
    draw.rectangle([hx - u, arm_end + 2 * u, hx + 6 * u, arm_end + 10 * u],
                   fill=_c(p.bag_colour))
  # Head and hair.
  hx0, hx1 = cx - head_w, cx + head_w
  draw.rectangle([cx - 2 * u, neck_y - 2 * u, cx + 2 * u, neck_y + u],
                 fill=_c(p.skin))
  if p.hair_long and view != FRONT:
    draw.rectangle([hx0 - u, top_y + 3 * u, hx1 + u, neck_y + 6 * u],
                   fill=_c(p.hair))
  draw.ellipse([hx0, top_y, hx1, top_y + head_h], fill=_c(p.skin))
  if view == BACK:
    draw.ellipse([hx0, top_y, hx1, top_y + head_h], fill=_c(p.hair))
  elif view == SIDE:
    draw.chord([hx0, top_y, hx1, top_y + head_h], 90, 270, fill=_c(p.hair))
    draw.chord([hx0, top_y, hx1, top_y + 0.7 * head_h], 180, 360,
               fill=_c(p.hair))
  else:
    draw.chord([hx0, top_y, hx1, top_y + 0.8 * head_h], 180, 360,
               fill=_c(p.hair))
    if p.hair_long:
      draw.rectangle([hx0 - u, top_y + 4 * u, hx0 + u, neck_y + 5 * u],
                     fill=_c(p.hair))
      draw.rectangle([hx1 - u, top_y + 4 * u, hx1 + u, neck_y + 5 * u],
                     fill=_c(p.hair))
  if p.hat is not None:
    draw.rectangle([hx0 - u, top_y - u, hx1 + u, top_y + 0.35 * head_h],
                   fill=_c(p.hat))


def render(person: Person | None, camera: Camera, rng: np.random.Generator,
           image_size: tuple[int, int]) -> Image.Image:
  """Renders one image of `person` (None = junk box) seen by `camera`.

  Returns:
    RGB image of size (W, H).
  """
  h, w = image_size
  off = int(rng.integers(0, camera.scene.shape[1] - w + 1))
  img = Image.fromarray(camera.scene[:, off:off + w])
  draw = ImageDraw.Draw(img)
  view = int(rng.choice(3, p=camera.views))
  if person is not None:
    _draw_person(draw, person, view, rng, h, w)
  if rng.uniform() < camera.occlusion:
    # Something in front: a passer-by's body, a car, a sign.
    c = tuple(int(v) for v in rng.uniform(20, 230, 3))
    kind = rng.integers(3)
    if kind == 0:
      y0 = h * rng.uniform(0.6, 0.8)
      draw.rectangle([0, y0, w, h], fill=c)
    else:
      x0 = w * rng.uniform(-0.2, 0.15)
      xs = (x0, x0 + w * rng.uniform(0.2, 0.35))
      if kind == 2:
        xs = (w - xs[1], w - xs[0])
      draw.rectangle([xs[0], h * rng.uniform(0, 0.4), xs[1], h], fill=c)
  if rng.uniform() < 0.5:
    img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
  # Resolution and blur (blur at the low resolution: cheaper, same look).
  if camera.scale < 1.:
    img = img.resize((max(1, int(w * camera.scale)),
                      max(1, int(h * camera.scale))),
                     Image.Resampling.BILINEAR)
  blur = camera.blur * min(1., camera.scale)
  if blur > 0.05:
    img = img.filter(ImageFilter.BoxBlur(blur))
  if camera.scale < 1.:
    img = img.resize((w, h), Image.Resampling.BILINEAR)
  # Illumination and colour cast: a per-channel linear map (saturating).
  g = camera.cast * (camera.gain * rng.uniform(0.88, 1.12))
  img = img.convert("RGB", (g[0], 0, 0, 0, 0, g[1], 0, 0, 0, 0, g[2], 0))
  # Sensor noise: a random crop of the camera's noise field, added with
  # saturation.
  y = int(rng.integers(0, camera.noise_pos.height - h + 1))
  x = int(rng.integers(0, camera.noise_pos.width - w + 1))
  box = (x, y, x + w, y + h)
  img = ImageChops.add(img, camera.noise_pos.crop(box))
  return ImageChops.subtract(img, camera.noise_neg.crop(box))
