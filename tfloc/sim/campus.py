"""The procedural ``campus`` scene (seed 004's urban campus, ours).

A fixed seed gives the same scene, byte for byte: a ground plane, a grid of
roads and buildings of varied footprint and height in the blocks between the
roads, written as Mitsuba XML plus binary PLY meshes with ITU radio materials
(``sionna.rt.load_scene`` reads it). Six BS sites stand on rooftops spread
over the UE area, each facing the area's centre.

    python scenes/campus/generate.py [--seed 4] [--render docs/campus.png]
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from tfloc.utils import atomic_dir

#: bump when the generated geometry changes (it is part of the path-cache key)
CAMPUS_VERSION = 2
#: the UE area of seed 004: 220 x 300 m
AREA_M = (220.0, 300.0)
#: ITU materials (Sionna RT ``itu-radio-material`` types) of building facades
BUILDING_MATERIALS = ("concrete", "brick", "glass", "marble")
NUM_SITES = 6
_MARGIN_M = 40.0           # ground beyond the UE area
_ROAD_WIDTH_M = 12.0
_ROADS_X = (70.0, 150.0)   # roads along y at these x
_ROADS_Y = (100.0, 200.0)  # roads along x at these y


def campus_dir(seed: int, root: str | None = None) -> str:
    """Where the campus of ``seed`` is generated (``scenes/campus/seed-NNN``)."""
    if root is None:
        root = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))), "scenes", "campus")
    return os.path.join(root, f"seed-{seed:03d}")


def _box(x0, y0, x1, y1, z0, z1):
    """Vertices [8, 3] and triangles [12, 3] of an axis-aligned box, faces outward."""
    v = np.array([[x0, y0, z0], [x1, y0, z0], [x1, y1, z0], [x0, y1, z0],
                  [x0, y0, z1], [x1, y0, z1], [x1, y1, z1], [x0, y1, z1]], np.float32)
    f = np.array([[0, 2, 1], [0, 3, 2],        # bottom (-z)
                  [4, 5, 6], [4, 6, 7],        # top (+z)
                  [0, 1, 5], [0, 5, 4],        # -y
                  [1, 2, 6], [1, 6, 5],        # +x
                  [2, 3, 7], [2, 7, 6],        # +y
                  [3, 0, 4], [3, 4, 7]], np.int32)  # -x
    return v, f


def _quad(x0, y0, x1, y1, z):
    v = np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], np.float32)
    return v, np.array([[0, 1, 2], [0, 2, 3]], np.int32)


def _merge(parts):
    verts, faces, n = [], [], 0
    for v, f in parts:
        verts.append(v)
        faces.append(f + n)
        n += len(v)
    return np.concatenate(verts), np.concatenate(faces)


def write_ply(path: str, vertices: np.ndarray, faces: np.ndarray):
    """Binary little-endian PLY (the format Sionna's scenes use)."""
    header = ("ply\nformat binary_little_endian 1.0\n"
              f"element vertex {len(vertices)}\nproperty float x\nproperty float y\nproperty float z\n"
              f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n")
    rec = np.zeros(len(faces), dtype=[("n", "u1"), ("i", "<i4", (3,))])
    rec["n"], rec["i"] = 3, faces
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(np.ascontiguousarray(vertices, "<f4").tobytes())
        fh.write(rec.tobytes())


def _blocks():
    """Rectangles [x0, y0, x1, y1] between the roads (and the area's edge)."""
    w = _ROAD_WIDTH_M / 2
    xs = [-_MARGIN_M / 2] + [v for x in _ROADS_X for v in (x - w, x + w)] + [AREA_M[0] + _MARGIN_M / 2]
    ys = [-_MARGIN_M / 2] + [v for y in _ROADS_Y for v in (y - w, y + w)] + [AREA_M[1] + _MARGIN_M / 2]
    return [(xs[i], ys[j], xs[i + 1], ys[j + 1])
            for i in range(0, len(xs), 2) for j in range(0, len(ys), 2)]


def layout(seed: int) -> dict:
    """The campus of ``seed`` as numbers: buildings and BS sites.

    Output
    ------
    dict with ``buildings`` (list of {x0, y0, x1, y1, height, material}) and
    ``sites`` (list of {position, azimuth_deg, downtilt_deg}, NUM_SITES of them).
    """
    rng = np.random.default_rng(seed)
    buildings = []
    setback = 4.0
    for bx0, by0, bx1, by1 in _blocks():
        placed = []
        for _ in range(60):  # rejection sampling of non-overlapping footprints
            if len(placed) >= 4:
                break
            w, d = rng.uniform(14, 45), rng.uniform(12, 40)
            if bx1 - bx0 - 2 * setback < w or by1 - by0 - 2 * setback < d:
                continue
            x0 = rng.uniform(bx0 + setback, bx1 - setback - w)
            y0 = rng.uniform(by0 + setback, by1 - setback - d)
            box = (x0, y0, x0 + w, y0 + d)
            if any(box[0] < p[2] + 8 and p[0] < box[2] + 8 and box[1] < p[3] + 8 and p[1] < box[3] + 8
                   for p in placed):
                continue  # keep 8 m between buildings
            placed.append(box)
            buildings.append({"x0": round(box[0], 2), "y0": round(box[1], 2),
                              "x1": round(box[2], 2), "y1": round(box[3], 2),
                              "height": round(float(rng.uniform(8, 40)), 2),
                              "material": BUILDING_MATERIALS[int(rng.integers(len(BUILDING_MATERIALS)))]})
    # BS sites: the roof of the tallest building in each of 2 x 3 zones of the
    # UE area, on a 4 m mast at the roof corner nearest the area's centre.
    centre = np.array([AREA_M[0] / 2, AREA_M[1] / 2])
    sites = []
    for i in range(2):
        for j in range(3):
            zx = (i * AREA_M[0] / 2, (i + 1) * AREA_M[0] / 2)
            zy = (j * AREA_M[1] / 3, (j + 1) * AREA_M[1] / 3)
            inside = [b for b in buildings if zx[0] <= (b["x0"] + b["x1"]) / 2 < zx[1]
                      and zy[0] <= (b["y0"] + b["y1"]) / 2 < zy[1]]
            if not inside:  # never happened for seeds 0-199
                from tfloc.config import ConfigError
                raise ConfigError(f"simulation.scene_seed: campus seed {seed} left zone {i},{j} "
                                  "without a building for a BS site; choose another seed")
            b = max(inside, key=lambda b: b["height"])
            corners = np.array([[b["x0"], b["y0"]], [b["x1"], b["y0"]], [b["x1"], b["y1"]], [b["x0"], b["y1"]]])
            c = corners[np.argmin(np.linalg.norm(corners - centre, axis=1))]
            inward = np.array([(b["x0"] + b["x1"]) / 2, (b["y0"] + b["y1"]) / 2]) - c
            c = c + 1.0 * np.sign(inward)  # 1 m inside the roof edge
            pos = [round(float(c[0]), 2), round(float(c[1]), 2), round(b["height"] + 4.0, 2)]
            d = centre - c
            sites.append({"position": pos,
                          "azimuth_deg": round(float(np.degrees(np.arctan2(d[1], d[0]))), 2),
                          "downtilt_deg": 10.0})
    return {"buildings": buildings, "sites": sites}


_XML_HEAD = """<scene version="2.1.0">
    <!-- tfloc procedural campus, seed {seed}, generator version {version} -->
    <integrator type="path"><integer name="max_depth" value="12"/></integrator>
"""


def _material_xml(name: str) -> str:
    return (f'    <bsdf type="itu-radio-material" id="mat-{name}">\n'
            f'        <string name="type" value="{name}"/>\n'
            f'        <float name="thickness" value="0.2"/>\n    </bsdf>\n')


def _shape_xml(name: str, material: str) -> str:
    return (f'    <shape type="ply" id="mesh-{name}" name="mesh-{name}">\n'
            f'        <string name="filename" value="meshes/{name}.ply"/>\n'
            f'        <boolean name="face_normals" value="true"/>\n'
            f'        <ref id="mat-{material}" name="bsdf"/>\n    </shape>\n')


def generate_campus(seed: int = 4, out_dir: str | None = None) -> str:
    """Writes the campus of ``seed`` (XML, meshes, ``sites.json``); returns the XML path.

    Existing output of the same seed and generator version is reused; the
    directory appears atomically, so concurrent builds never see half a scene.
    """
    out_dir = out_dir or campus_dir(seed)
    xml = os.path.join(out_dir, "campus.xml")
    manifest = os.path.join(out_dir, "manifest.json")
    if os.path.isfile(manifest):
        with open(manifest) as fh:
            if json.load(fh).get("version") == CAMPUS_VERSION:
                return xml
    lay = layout(seed)
    with atomic_dir(out_dir) as tmp:
        os.makedirs(os.path.join(tmp, "meshes"))
        w, h, m = AREA_M[0], AREA_M[1], _MARGIN_M
        shapes = {"ground": ([_quad(-m, -m, w + m, h + m, 0.0)], "medium_dry_ground")}
        r = _ROAD_WIDTH_M / 2
        roads = [_quad(x - r, -m, x + r, h + m, 0.02) for x in _ROADS_X]
        roads += [_quad(-m, y - r, w + m, y + r, 0.03) for y in _ROADS_Y]
        shapes["roads"] = (roads, "concrete")
        for mat in BUILDING_MATERIALS:
            parts = [_box(b["x0"], b["y0"], b["x1"], b["y1"], 0.0, b["height"])
                     for b in lay["buildings"] if b["material"] == mat]
            if parts:
                shapes[f"buildings_{mat}"] = (parts, mat)
        materials = sorted({mat for _, mat in shapes.values()})
        text = _XML_HEAD.format(seed=seed, version=CAMPUS_VERSION)
        text += "".join(_material_xml(mat) for mat in materials)
        for name, (parts, mat) in shapes.items():
            write_ply(os.path.join(tmp, "meshes", f"{name}.ply"), *_merge(parts))
            text += _shape_xml(name, mat)
        text += "</scene>\n"
        with open(os.path.join(tmp, "campus.xml"), "w") as fh:
            fh.write(text)
        with open(os.path.join(tmp, "sites.json"), "w") as fh:
            json.dump(lay["sites"], fh, indent=2)
        with open(os.path.join(tmp, "layout.json"), "w") as fh:
            json.dump(lay, fh, indent=1)
        with open(os.path.join(tmp, "manifest.json"), "w") as fh:
            json.dump({"seed": seed, "version": CAMPUS_VERSION, "area_m": list(AREA_M),
                       "num_buildings": len(lay["buildings"])}, fh, indent=2)
    return xml


def scene_digest(directory: str) -> str:
    """SHA-256 over every file of a generated scene (names and bytes)."""
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(directory)):
        for name in sorted(files):
            path = os.path.join(root, name)
            h.update(os.path.relpath(path, directory).encode())
            with open(path, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


def load_sites(seed: int) -> list[dict]:
    with open(os.path.join(os.path.dirname(generate_campus(seed)), "sites.json")) as fh:
        return json.load(fh)


def render(seed: int, filename: str, resolution=(960, 720), num_samples: int = 64) -> str:
    """Renders the campus with its BS sites marked (Sionna's renderer); returns ``filename``."""
    import sionna.rt as rt
    scene = rt.load_scene(generate_campus(seed))
    for k, s in enumerate(load_sites(seed)):
        scene.add(rt.Transmitter(name=f"bs{k}", position=s["position"], display_radius=6.0,
                                 orientation=[float(np.radians(s["azimuth_deg"])),
                                              float(np.radians(s["downtilt_deg"])), 0.0]))
    cx, cy = AREA_M[0] / 2, AREA_M[1] / 2
    cam = rt.Camera(position=[cx - 250.0, cy - 420.0, 420.0], look_at=[cx, cy - 10.0, 0.0])
    os.makedirs(os.path.dirname(os.path.abspath(filename)), exist_ok=True)
    scene.render_to_file(camera=cam, filename=filename, resolution=resolution,
                         num_samples=num_samples, show_orientations=True)
    return filename


def main(argv=None) -> int:
    """``python scenes/campus/generate.py [--seed N] [--render PNG]``."""
    import argparse
    p = argparse.ArgumentParser(description="Generate the procedural campus scene (seed 004).")
    p.add_argument("--seed", type=int, default=4)
    p.add_argument("--out", help="output directory (default: scenes/campus/seed-NNN)")
    p.add_argument("--render", metavar="PNG", help="also render the scene with its BS sites marked")
    args = p.parse_args(argv)
    xml = generate_campus(args.seed, args.out)
    directory = os.path.dirname(xml)
    with open(os.path.join(directory, "manifest.json")) as fh:
        info = json.load(fh)
    print(f"campus seed {args.seed}: {xml} ({info['num_buildings']} buildings, "
          f"{NUM_SITES} BS sites; sha256 {scene_digest(directory)[:16]})")
    if args.render:
        print(f"wrote {render(args.seed, args.render)}")
    return 0
