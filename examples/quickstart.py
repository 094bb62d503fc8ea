"""c2lite in ten lines: feed a blob, build a net with core, run it, fetch the result."""
import numpy as np

from c2lite import core, workspace

workspace.FeedBlob("x", np.array([[-1.0, 2.0], [3.0, -4.0]], dtype=np.float32))
net = core.Net("quickstart")
y = net.Relu(["x"], "y")                    # y = max(x, 0)
z = net.Scale([y], "z", scale=10.0)         # z = 10 * y
workspace.RunNetOnce(net)
print(workspace.FetchBlob("z"))             # [[ 0. 20.] [30.  0.]]
