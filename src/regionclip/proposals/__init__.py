"""Region proposals (method reference §4.1, §6.1): an RPN trained on base-class boxes, random boxes, or
given boxes, all behind one interface (:class:`~regionclip.proposals.base.ProposalGenerator`)."""

from regionclip.proposals.base import GivenBoxes, ProposalGenerator, Proposals

__all__ = ["GivenBoxes", "ProposalGenerator", "Proposals"]
