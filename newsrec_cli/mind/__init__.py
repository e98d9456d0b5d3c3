"""The MIND data layer: readers, vocabularies, compact impressions, splits. No torch in here."""

from newsrec_cli.mind.behaviors import Impressions, read_behaviors
from newsrec_cli.mind.dataset import MindDataset, load_dataset
from newsrec_cli.mind.entities import Entity, parse_entities
from newsrec_cli.mind.layout import find_splits
from newsrec_cli.mind.news import NewsTable, read_news
from newsrec_cli.mind.report import BadLine, ReadReport
from newsrec_cli.mind.split import split_by_impression, split_by_time
from newsrec_cli.mind.vec import read_vec
from newsrec_cli.mind.vocab import Vocab

__all__ = [
    "BadLine",
    "Entity",
    "Impressions",
    "MindDataset",
    "NewsTable",
    "ReadReport",
    "Vocab",
    "find_splits",
    "load_dataset",
    "parse_entities",
    "read_behaviors",
    "read_news",
    "read_vec",
    "split_by_impression",
    "split_by_time",
]
