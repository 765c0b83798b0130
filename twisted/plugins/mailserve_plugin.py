"""twistd plugin: ``twistd -n mailserve --config=PATH``."""

from twisted.application.service import ServiceMaker

mailserve = ServiceMaker("mailserve", "mailserve.tap", "All-in-one mail server", "mailserve")
