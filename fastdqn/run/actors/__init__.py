"""One run on many cores or machines: Ray actors step EnvPool envs and act with a CPU copy
of the network, one learner owns the replay buffer, the device, logging, evaluation and
checkpoints (Ape-X, Horgan et al. 2018). What travels between them (``wire``), the actor
(``env_actor``), the pace kept between env steps and updates (``limiter``), the actors seen
from the learner (``fleet``), the learner's loop (``learner_loop``) and how Ray is started
(``ray_setup``).

Part of the running layer: may import the replay, learning, pipeline and util layers and
the rest of ``fastdqn.run``. Ray is imported inside functions only, so importing this
package (or ``fastdqn``) never imports Ray.
"""
