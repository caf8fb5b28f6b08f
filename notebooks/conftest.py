"""nbval runs every course notebook in a kernel under the offline guard, as the course runner
does: only loopback is reachable, and nothing can be downloaded."""

import os

from om_teach.offline import offline_env

os.environ.update(offline_env())
