"""OBJ/MTL/PNG, GLB and PLY writers: reload with trimesh, Khronos validator, options, errors."""

import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from threestudio_like.core.errors import UserError
from threestudio_like.export.gltf import glb_bytes
from threestudio_like.export.mesh_export import export_mesh
from threestudio_like.export.ply import write_ply_mesh, write_ply_points
from threestudio_like.geometry.base import Mesh

ROOT = Path(__file__).resolve().parent.parent
VALIDATOR = ROOT / "tools" / "node_modules" / "gltf-validator"

VALIDATE_JS = """
const v = require(process.argv[1]);
const data = new Uint8Array(require('fs').readFileSync(process.argv[2]));
v.validateBytes(data, {uri: 'model.glb', maxIssues: 200})
  .then(r => console.log(JSON.stringify(r.issues)))
  .catch(e => { console.error(String(e)); process.exit(3); });
"""


def _quantize(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def pbr_fn(p):
    return {"albedo": (p + 1) / 2, "roughness": (p[:, :1] + 1) / 2, "metallic": (p[:, 1:2] + 1) / 2}


def _box_mesh() -> Mesh:
    tm = trimesh.creation.icosphere(2)
    tm.vertices *= np.array([2.0, 1.0, 0.5])  # anisotropic: axes distinguishable
    tm.vertices += np.array([0.3, -0.2, 0.1])
    return Mesh(torch.tensor(tm.vertices, dtype=torch.float32), torch.tensor(tm.faces))


def _y_up(p: np.ndarray) -> np.ndarray:
    """Our +Z-up world expressed +Y up (glTF's frame): (x, y, z) → (x, z, −y)."""
    return np.stack([p[:, 0], p[:, 2], -p[:, 1]], axis=1)


def _bounds(p: np.ndarray) -> np.ndarray:
    return np.stack([p.min(0), p.max(0)])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    result = export_mesh(
        _box_mesh(),
        pbr_fn,
        out,
        {"formats": ["obj", "glb", "ply"], "texture_size": 128, "min_component_area_fraction": 0.0},
    )
    return result.files


def _validate(path: Path) -> dict:
    if shutil.which("node") is None:
        pytest.skip("node not installed (needed for the Khronos glTF validator)")
    if not VALIDATOR.exists():
        pytest.skip("gltf-validator missing: run tools/install_node_tools.sh")
    proc = subprocess.run(
        ["node", "-e", VALIDATE_JS, str(VALIDATOR), str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_written_files(exported):
    assert set(exported) == {"obj", "mtl", "albedo", "roughness", "metallic", "glb", "ply"}
    mtl = exported["mtl"].read_text().splitlines()
    assert "map_Kd model_albedo.png" in mtl and "map_Pr model_roughness.png" in mtl
    assert "map_Pm model_metallic.png" in mtl
    assert all(p.is_file() and p.stat().st_size > 0 for p in exported.values())
    assert not list(exported["obj"].parent.glob(".*tmp"))  # no temp files left


def test_obj_reload_geometry_and_texture(exported):
    obj = trimesh.load(exported["obj"], process=False)
    src = _box_mesh()
    # same surface, +Y up by default: the bounds are the source's, rotated
    assert np.allclose(obj.bounds, _bounds(_y_up(src.v_pos.numpy())), atol=1e-5)
    assert obj.faces.shape == (src.num_faces, 3)
    assert obj.volume == pytest.approx(trimesh.Trimesh(src.v_pos.numpy(), src.t_pos_idx.numpy()).volume, rel=1e-4)
    assert obj.volume > 0
    written = np.asarray(Image.open(exported["albedo"]))
    assert np.array_equal(np.asarray(obj.visual.material.image)[..., :3], written)


def test_glb_structure_and_axes(exported):
    data = exported["glb"].read_bytes()
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    assert (magic, version, length) == (b"glTF", 2, len(data))
    json_len, json_type = struct.unpack_from("<I4s", data, 12)
    assert json_type == b"JSON" and json_len % 4 == 0
    doc = json.loads(data[20 : 20 + json_len])
    bin_len, bin_type = struct.unpack_from("<I4s", data, 20 + json_len)
    assert bin_type == b"BIN\x00" and bin_len == doc["buffers"][0]["byteLength"]
    assert all(v["byteOffset"] % 4 == 0 for v in doc["bufferViews"])

    scene = trimesh.load(exported["glb"], process=False)
    glb = next(iter(scene.geometry.values()))
    # the source's +Z-up world → +Y-up glTF: (x, y, z) → (x, z, −y); compare bounds
    assert np.allclose(glb.bounds, _bounds(_y_up(_box_mesh().v_pos.numpy())), atol=1e-5)


def test_obj_and_glb_agree(exported):
    """Both +Y up: the same (position, uv) corners, the same volume and outward winding. trimesh
    reads each in its own convention (OBJ as written, glTF's v flipped back), as Blender does."""
    glb = next(iter(trimesh.load(exported["glb"], process=False).geometry.values()))
    obj = trimesh.load(exported["obj"], process=False)
    key = lambda m: {tuple(np.round(np.r_[p, t], 5)) for p, t in zip(m.vertices, m.visual.uv)}  # noqa: E731
    assert key(glb) == key(obj)
    assert glb.volume == pytest.approx(obj.volume, rel=1e-4) and obj.volume > 0
    # up is +Y in both: the source's height (its z extent) is their y extent
    src = _box_mesh().v_pos.numpy()
    assert np.ptp(obj.vertices[:, 1]) == pytest.approx(np.ptp(src[:, 2]), rel=1e-5)
    assert np.ptp(glb.vertices[:, 1]) == pytest.approx(np.ptp(src[:, 2]), rel=1e-5)
    header = exported["obj"].read_text().split("\nv ")[0]
    assert "# up_axis: +Y" in header and "# units:" in header
    ply_header = exported["ply"].read_bytes().split(b"end_header")[0].decode()
    assert "comment up_axis: +Y" in ply_header and "comment units:" in ply_header


def test_glb_textures_equal_written_maps(exported):
    glb = next(iter(trimesh.load(exported["glb"], process=False).geometry.values()))
    mat = glb.visual.material
    albedo = np.asarray(Image.open(exported["albedo"]))
    assert np.array_equal(np.asarray(mat.baseColorTexture)[..., :3], albedo)
    mr = np.asarray(mat.metallicRoughnessTexture)
    assert np.array_equal(mr[..., 1], np.asarray(Image.open(exported["roughness"])))
    assert np.array_equal(mr[..., 2], np.asarray(Image.open(exported["metallic"])))
    assert mat.metallicFactor == 1.0 and mat.roughnessFactor == 1.0


def test_glb_passes_khronos_validator(exported, tmp_path):
    issues = _validate(exported["glb"])
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, issues["messages"]
    plain = tmp_path / "plain.glb"  # untextured: base colour factor only
    plain.write_bytes(glb_bytes(_box_mesh()))
    issues = _validate(plain)
    assert issues["numErrors"] == 0, issues["messages"]


def test_validator_catches_broken_glb(exported, tmp_path):
    """The validator check above can fail: an accessor reading past its buffer view errs."""
    data = glb_bytes(_box_mesh())
    json_len = struct.unpack_from("<I", data, 12)[0]
    doc = json.loads(data[20 : 20 + json_len])
    doc["accessors"][0]["count"] += 1000
    text = json.dumps(doc).encode()
    text += b" " * (-len(text) % 4)
    rest = data[20 + json_len :]
    broken = tmp_path / "broken.glb"
    broken.write_bytes(
        struct.pack("<4sII", b"glTF", 2, 20 + len(text) + len(rest))
        + struct.pack("<I4s", len(text), b"JSON")
        + text
        + rest
    )
    assert _validate(broken)["numErrors"] > 0


def test_ply_mesh_and_points(exported, tmp_path):
    ply = trimesh.load(exported["ply"], process=False)
    obj = trimesh.load(exported["obj"], process=False)
    assert len(ply.faces) == len(obj.faces) and ply.volume == pytest.approx(obj.volume, rel=1e-4)
    world = np.stack([ply.vertices[:, 0], -ply.vertices[:, 2], ply.vertices[:, 1]], axis=1)  # +Y up → ours
    expected = _quantize((world + 1) / 2)
    assert np.abs(ply.visual.vertex_colors[:, :3].astype(int) - expected.astype(int)).max() <= 1

    gen = np.random.default_rng(0)
    pts, cols = gen.normal(size=(50, 3)).astype(np.float32), gen.random((50, 3))
    normals = pts / np.linalg.norm(pts, axis=1, keepdims=True)
    path = write_ply_points(tmp_path / "points.ply", torch.from_numpy(pts), cols, normals)
    cloud = trimesh.load(path, process=False)
    assert np.array_equal(cloud.vertices.astype(np.float32), pts)
    assert np.array_equal(cloud.colors[:, :3], _quantize(cols))
    header = path.read_bytes().split(b"end_header")[0].decode()
    assert "property float nx" in header and "format binary_little_endian 1.0" in header
    mesh_path = write_ply_mesh(tmp_path / "m.ply", _box_mesh())
    assert np.allclose(trimesh.load(mesh_path, process=False).vertices, _box_mesh().v_pos.numpy())


def test_unit_cube_and_up_axis(tmp_path):
    paths = export_mesh(
        _box_mesh(),
        None,
        tmp_path,
        {"formats": ["obj", "glb"], "scale_to_unit_cube": True, "up_axis": "+Z", "min_component_area_fraction": 0.0},
    ).files
    obj = trimesh.load(paths["obj"], process=False)
    assert np.allclose(obj.bounds.sum(0), 0, atol=1e-6)  # centred
    assert np.ptp(obj.vertices, axis=0).max() == pytest.approx(1.0)  # longest side 1
    extent = np.ptp(obj.vertices, axis=0)
    assert extent[2] == pytest.approx(0.25, rel=1e-4)  # +Z up: world z (0.5/2 of x) stays z
    assert set(paths) == {"obj", "mtl", "glb"}  # no textures without appearance
    assert "map_Kd" not in paths["mtl"].read_text()
    assert "# up_axis: +Z" in paths["obj"].read_text() and "longest side 1" in paths["obj"].read_text()


def test_empty_and_bad_config_raise_user_errors(tmp_path):
    empty = Mesh(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.int64))
    with pytest.raises(UserError, match="isosurface_threshold=25 gave no surface"):
        export_mesh(empty, pbr_fn, tmp_path, empty_hint="isosurface_threshold=25 gave no surface; try 10")
    with pytest.raises(UserError, match="decimate_target"):
        export_mesh(_box_mesh(), pbr_fn, tmp_path, {"decimate_target": 2, "texture_size": 64})
    with pytest.raises(UserError, match="export.formats"):
        export_mesh(_box_mesh(), pbr_fn, tmp_path, {"formats": ["fbx"]})
    with pytest.raises(UserError, match="texture_sise"):
        export_mesh(_box_mesh(), pbr_fn, tmp_path, {"texture_sise": 64})
    with pytest.raises(UserError, match="up_axis"):
        export_mesh(_box_mesh(), pbr_fn, tmp_path, {"up_axis": "-X"})
    assert not list(tmp_path.iterdir())  # nothing written on error
