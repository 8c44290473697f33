"""UV atlas by xatlas: cut the mesh into charts and pack them into the unit square.

UV convention (as OBJ): ``v_tex`` in [0,1]², ``u`` to the right, ``v`` up, so texel row ``i``
of an image with ``H`` rows (row 0 = top) covers ``v ∈ [1 − (i+1)/H, 1 − i/H]``. The glTF writer
flips ``v`` on output.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import UserError
from ..geometry.base import Mesh


def uv_unwrap(mesh: Mesh, texture_size: int = 1024, padding: int = 4) -> Mesh:
    """A copy of ``mesh`` with ``v_tex`` (T,2) and ``t_tex_idx`` (F,3); faces keep their order.

    ``texture_size`` is the texture resolution xatlas packs for and ``padding`` the gap in texels
    it leaves around each chart (room for seam dilation without bleeding between charts).
    """
    import xatlas

    if mesh.num_faces == 0:
        raise UserError("cannot build a UV atlas for an empty mesh (0 faces)")
    v = mesh.v_pos.detach().cpu().float().numpy()
    f = mesh.t_pos_idx.detach().cpu().numpy().astype(np.uint32)
    atlas = xatlas.Atlas()
    atlas.add_mesh(v, f)
    pack = xatlas.PackOptions()
    pack.resolution = int(texture_size)
    pack.padding = int(padding)
    atlas.generate(xatlas.ChartOptions(), pack)
    vmapping, indices, uvs = atlas[0]
    if indices.shape != f.shape or not np.array_equal(vmapping[indices], f):
        raise RuntimeError("xatlas changed the face order or connectivity of the mesh")
    t_tex_idx = mesh.t_pos_idx.new_tensor(indices.astype(np.int64)).long()
    return Mesh(
        v_pos=mesh.v_pos,
        t_pos_idx=mesh.t_pos_idx,
        v_tex=mesh.v_pos.new_tensor(uvs.astype(np.float32)),
        t_tex_idx=t_tex_idx,
    )
