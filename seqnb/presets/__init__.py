"""Each notebook's config class and preset tables; importing this package registers them all."""

from . import end_to_end_planner  # noqa: F401
from . import gemma_encoder  # noqa: F401
from . import quickstart  # noqa: F401
from . import sequencematch  # noqa: F401
from . import warmup_generations  # noqa: F401
from . import self_generated_tokens  # noqa: F401
