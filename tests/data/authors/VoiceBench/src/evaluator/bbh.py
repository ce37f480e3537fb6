"""Test fixture in the layout of VoiceBench's src/evaluator/bbh.py: the same names, made-up text."""
import random
import re


class BBHEvaluator:
    def extract_answer_hyperbaton(self, response):
        if response == "first":
            return 0
        elif "i pick (b)" in response:
            return 1
        elif "i pick (a)" in response:
            return 0
        elif re.search(r"sentence (.+?) reads right", response):
            return 1
        elif response.startswith("a "):
            return 0
        else:
            return random.choice([0, 1])

    def extract_answer_yn(self, response):
        if "verdict no" in response:
            return 0
        elif "verdict yes" in response:
            return 1
        else:
            return None

    def extract_answer_lies(self, response):
        tmp = self.extract_answer_yn(response)
        if tmp is not None:
            return tmp
        if response.endswith("is honest"):
            return 1
        elif response.endswith("is lying"):
            return 0
        else:
            return random.choice([0, 1])

    def extract_answer_navigate(self, response):
        tmp = self.extract_answer_yn(response)
        if tmp is not None:
            return tmp
        if "back home" in response:
            return 1
        elif "far away" in response:
            return 0
        else:
            return random.choice([0, 1])

    def extract_answer_sports(self, response):
        tmp = self.extract_answer_yn(response)
        if tmp is not None:
            return tmp
        if response.startswith("plausible"):
            return 1
        elif "implausible" in response:
            return 0
        else:
            return random.choice([0, 1])
