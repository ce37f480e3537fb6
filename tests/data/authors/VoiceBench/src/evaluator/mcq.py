"""Test fixture in the layout of VoiceBench's src/evaluator/mcq.py: the same names, made-up text."""


class MCQEvaluator:
    def extract_answer(self, response):
        response = response.lower()
        if response.startswith("<1>") or response.startswith("<2>") or response.startswith("<3>"):
            response = response[3:].strip()
        for template in [
            "my pick is [CHOICE]",
            "goes with ([CHOICE])",
        ]:
            for choice in ["a", "b", "c", "d"]:
                if template.replace("[CHOICE]", choice) in response:
                    return choice.upper()
        for choice in ["a", "b", "c", "d"]:
            if response == choice:
                return choice.upper()
            for punc in [".", ",", ":", ")"]:
                if response.startswith(choice + punc):
                    return choice.upper()
        if "the very first one" in response:
            return "A"
        elif "the last one" in response:
            return "D"
        else:
            return None
