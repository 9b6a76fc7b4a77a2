"""run the load engine's scenarios on Locust, alone or distributed.

``from polyai_async.locust import PolyAIUser`` in a locustfile; importing this package needs
the ``locust`` extra and monkey-patches the interpreter with gevent (as importing locust does),
so import it from locustfiles only, never from an asyncio program. It registers Locust event
listeners that add the ``--polyai-json``, ``--polyai-html`` and ``--polyai-report-timeout``
options and merge the workers' exact histograms on the master.
"""

from . import _plugin as _plugin  # registers the event listeners
from ._bridge import ExpectationFailed
from ._capacity_shape import CapacityShape
from ._checks import RequestFailed
from ._shape import StagesShape
from ._user import PolyAIUser

__all__ = ["CapacityShape", "ExpectationFailed", "PolyAIUser", "RequestFailed", "StagesShape"]
