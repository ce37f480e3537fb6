"""Test fixture in the layout of VoiceBench's api_judge.py: the same names, made-up text."""

meta_prompt_open = """
Grade the spoken reply from 1 to 5.
[Asked] {prompt}
[Replied] {response}
Give the number alone.
"""

meta_prompt_qa = """
Asked: {prompt}
Expected: {reference}
Replied: {response}
Does the reply match? Yes or No.
""".strip()


def generate(item):
    if "reference" in item:
        prompt = meta_prompt_qa.replace("{prompt}", item["prompt"]).replace("{reference}", item["reference"])
        prompt = prompt.replace("{response}", item["response"])
    else:
        prompt = meta_prompt_open.replace("{prompt}", item["prompt"]).replace("{response}", item["response"])
    messages = [{"role": "system", "content": "You grade answers fairly."}, {"role": "user", "content": prompt}]
    return {**item, "messages": messages}
