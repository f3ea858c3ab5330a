"""Standard ops whose onnx.reference implementation cannot run our files, replaced for the
reference evaluator only (onnxruntime is unaffected).

GatherElements: onnx 1.23's `gather_numpy` builds the cross-section shape with
`shape[dim + 1:]`, which for axis -1 is the whole shape, so every negative axis fails; it
also uses np.choose, limited to 64 choices. The rel-shift gathers along axis -1 over 2T-1
columns. np.take_along_axis is the op's definition.
"""

import numpy as np
from onnx.reference.op_run import OpRun


class GatherElements(OpRun):
    op_domain = ""

    def _run(self, data, indices, axis=None):
        axis = 0 if axis is None else axis
        indices = np.where(indices < 0, indices + data.shape[axis], indices)
        return (np.take_along_axis(data, indices, axis=axis),)
