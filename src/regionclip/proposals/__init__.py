"""Region proposals (method reference §4.1, §6.1): an RPN trained on base-class boxes, random boxes, or
given boxes, all behind one interface (:class:`~regionclip.proposals.base.ProposalGenerator`)."""

from regionclip.proposals.base import GivenBoxes, ProposalGenerator, Proposals
from regionclip.proposals.config import ProposalConfig, RPNConfig
from regionclip.proposals.loading import build_proposal_generator, load_proposal_generator, load_rpn
from regionclip.proposals.random_boxes import RandomBoxes
from regionclip.proposals.rpn import ClassAgnosticRPN, build_rpn

__all__ = [
    "ClassAgnosticRPN",
    "GivenBoxes",
    "ProposalConfig",
    "ProposalGenerator",
    "Proposals",
    "RPNConfig",
    "RandomBoxes",
    "build_proposal_generator",
    "build_rpn",
    "load_proposal_generator",
    "load_rpn",
]
