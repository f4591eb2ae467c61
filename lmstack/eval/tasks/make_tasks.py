"""Write the data of the small evaluation tasks lmstack ships (the YAML files beside it name them).

Run `python lmstack/eval/tasks/make_tasks.py` to regenerate the JSONL files. Every question and
sentence is built here from word lists written for lmstack (no benchmark data is copied); the
output is deterministic (fixed seeds).

- lmstack_mc: four-choice questions of everyday knowledge and small arithmetic (multiple_choice).
- lmstack_arith: "What is 7 plus 5?" answered with a number (generate_until, exact match).
- lmstack_rewrite: a sentence rewritten in the past tense (generate_until, BLEU / chrF / ROUGE).
- lmstack_complete: a situation and four endings, one sensible (multiple_choice with multi-token
  choices, the shape of sentence-completion benchmarks).
- lmstack_prose.txt is hand-written prose for rolling perplexity and needs no generator.
"""

from __future__ import annotations

import random
from pathlib import Path

from lmstack.data.io import write_jsonl

HERE = Path(__file__).parent

OPPOSITES = [
    ("hot", "cold"), ("tall", "short"), ("fast", "slow"), ("happy", "sad"), ("open", "closed"), ("early", "late"),
    ("heavy", "light"), ("empty", "full"), ("wet", "dry"), ("loud", "quiet"), ("rich", "poor"), ("old", "young"),
    ("clean", "dirty"), ("hard", "soft"), ("strong", "weak"), ("thick", "thin"), ("near", "far"), ("up", "down"),
    ("inside", "outside"), ("day", "night"), ("win", "lose"), ("push", "pull"), ("buy", "sell"), ("begin", "end"),
    ("above", "below"), ("first", "last"), ("true", "false"), ("friend", "enemy"), ("sweet", "sour"),
    ("wide", "narrow"), ("brave", "afraid"), ("awake", "asleep"), ("arrive", "leave"), ("laugh", "cry"),
]
CATEGORIES = {
    "fruit": ["apple", "banana", "cherry", "pear", "mango", "plum", "peach", "grape", "lemon", "orange"],
    "tool": ["hammer", "saw", "wrench", "drill", "shovel", "screwdriver", "chisel", "rake"],
    "animal": ["horse", "rabbit", "tiger", "sheep", "goat", "wolf", "camel", "zebra", "otter", "fox"],
    "vehicle": ["bicycle", "truck", "bus", "train", "tractor", "scooter", "canoe", "taxi"],
    "instrument": ["piano", "violin", "trumpet", "drum", "flute", "guitar", "cello", "harp"],
    "piece of furniture": ["chair", "table", "sofa", "bed", "wardrobe", "bookcase", "stool", "desk"],
}
CAPITALS = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"),
    ("Egypt", "Cairo"), ("Canada", "Ottawa"), ("Russia", "Moscow"), ("China", "Beijing"), ("India", "New Delhi"),
    ("Greece", "Athens"), ("Portugal", "Lisbon"), ("Norway", "Oslo"), ("Sweden", "Stockholm"),
    ("Poland", "Warsaw"), ("Austria", "Vienna"), ("Ireland", "Dublin"), ("Kenya", "Nairobi"), ("Peru", "Lima"),
    ("Argentina", "Buenos Aires"), ("Mexico", "Mexico City"), ("Thailand", "Bangkok"), ("Turkey", "Ankara"),
    ("Australia", "Canberra"), ("Brazil", "Brasilia"), ("Finland", "Helsinki"), ("Denmark", "Copenhagen"),
    ("Hungary", "Budapest"), ("Cuba", "Havana"), ("South Korea", "Seoul"),
]
PLURALS = [
    ("mouse", "mice"), ("child", "children"), ("foot", "feet"), ("tooth", "teeth"), ("goose", "geese"),
    ("man", "men"), ("woman", "women"), ("person", "people"), ("leaf", "leaves"), ("knife", "knives"),
    ("wolf", "wolves"), ("box", "boxes"), ("city", "cities"), ("baby", "babies"), ("fish", "fish"),
    ("sheep", "sheep"), ("cactus", "cacti"), ("potato", "potatoes"), ("life", "lives"), ("ox", "oxen"),
]
COLORS = [
    ("a clear daytime sky", "blue"), ("fresh grass", "green"), ("fresh snow", "white"), ("a ripe banana", "yellow"),
    ("coal", "black"), ("a ripe tomato", "red"), ("a ripe orange", "orange"), ("milk", "white"),
    ("a lemon", "yellow"), ("charcoal", "black"), ("a strawberry", "red"), ("a pine tree's needles", "green"),
]
COLOR_NAMES = ["blue", "green", "white", "yellow", "black", "red", "orange", "purple", "brown", "pink"]
YOUNG = [
    ("cat", "kitten"), ("dog", "puppy"), ("cow", "calf"), ("sheep", "lamb"), ("horse", "foal"), ("goat", "kid"),
    ("duck", "duckling"), ("frog", "tadpole"), ("bear", "cub"), ("hen", "chick"), ("kangaroo", "joey"),
    ("swan", "cygnet"),
]
COUNTS = [
    ("legs does a spider have", 8), ("legs does an insect have", 6), ("legs does a dog have", 4),
    ("legs does a bird have", 2), ("days are in a week", 7), ("months are in a year", 12),
    ("hours are in a day", 24), ("minutes are in an hour", 60), ("sides does a triangle have", 3),
    ("sides does a square have", 4), ("wheels does a bicycle have", 2), ("seasons are in a year", 4),
    ("days are in a leap year", 366), ("sides does a hexagon have", 6), ("players are on a chess board at the start", 2),
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]


def _question(rnd: random.Random, text: str, answer: str, distractors: list[str]) -> dict:
    options = list(dict.fromkeys(d for d in distractors if d != answer))
    choices = [answer, *rnd.sample(options, 3)]
    rnd.shuffle(choices)
    return {"question": text, "choices": choices, "answer": choices.index(answer)}


def _number_distractors(rnd: random.Random, answer: int) -> list[str]:
    near = [answer + d for d in (-10, -2, -1, 1, 2, 3, 10) if answer + d >= 0]
    return [str(n) for n in rnd.sample(near, len(near))]


def multiple_choice_questions(seed: int) -> list[dict]:
    rnd = random.Random(seed)
    questions = []
    for _ in range(40):
        a, b = rnd.randint(2, 30), rnd.randint(2, 30)
        questions.append(_question(rnd, f"What is {a} plus {b}?", str(a + b), _number_distractors(rnd, a + b)))
        a, b = sorted((rnd.randint(2, 40), rnd.randint(2, 40)), reverse=True)
        questions.append(_question(rnd, f"What is {a} minus {b}?", str(a - b), _number_distractors(rnd, a - b)))
    words = [w for pair in OPPOSITES for w in pair]
    for word, opposite in OPPOSITES:
        questions.append(_question(rnd, f"What is the opposite of '{word}'?", opposite, words))
    for category, members in CATEGORIES.items():
        others = [m for c, ms in CATEGORIES.items() if c != category for m in ms]
        for member in members:
            questions.append(_question(rnd, f"Which of these is a {category}?", member, others))
    cities = [city for _, city in CAPITALS]
    for country, city in CAPITALS:
        questions.append(_question(rnd, f"What is the capital of {country}?", city, cities))
    plural_forms = [w for pair in PLURALS for w in pair] + ["mouses", "childs", "foots", "gooses", "sheeps"]
    for singular, plural in PLURALS:
        questions.append(_question(rnd, f"What is the plural of '{singular}'?", plural, plural_forms))
    for thing, color in COLORS:
        questions.append(_question(rnd, f"What color is {thing}?", color, COLOR_NAMES))
    babies = [young for _, young in YOUNG]
    for animal, young in YOUNG:
        questions.append(_question(rnd, f"What is a young {animal} called?", young, babies))
    for what, count in COUNTS:
        questions.append(_question(rnd, f"How many {what}?", str(count), _number_distractors(rnd, count)))
    for names, unit in ((DAYS, "day"), (MONTHS, "month")):
        for i, name in enumerate(names):
            questions.append(_question(rnd, f"Which {unit} comes after {name}?", names[(i + 1) % len(names)], names))
    rnd.shuffle(questions)
    return questions


def arithmetic_questions(seed: int, count: int) -> list[dict]:
    rnd = random.Random(seed)
    rows = []
    for _ in range(count):
        a, b = rnd.randint(1, 50), rnd.randint(1, 50)
        if rnd.random() < 0.5:
            rows.append({"question": f"What is {a} plus {b}?", "answer": str(a + b)})
        else:
            a, b = max(a, b), min(a, b)
            rows.append({"question": f"What is {a} minus {b}?", "answer": str(a - b)})
    return rows


# (base form, third person singular, past, the rest of the sentence)
VERBS = [
    ("walk", "walks", "walked", "to the park"), ("see", "sees", "saw", "the mountains"), ("eat", "eats", "ate", "an apple"),
    ("write", "writes", "wrote", "a letter"), ("read", "reads", "read", "the newspaper"), ("cook", "cooks", "cooked", "dinner"),
    ("drink", "drinks", "drank", "some water"), ("paint", "paints", "painted", "the fence"), ("buy", "buys", "bought", "bread"),
    ("carry", "carries", "carried", "the boxes"), ("find", "finds", "found", "the keys"), ("play", "plays", "played", "chess"),
    ("sing", "sings", "sang", "a song"), ("build", "builds", "built", "a shed"), ("clean", "cleans", "cleaned", "the kitchen"),
    ("take", "takes", "took", "the bus"), ("open", "opens", "opened", "the window"), ("bring", "brings", "brought", "a cake"),
    ("watch", "watches", "watched", "the birds"), ("teach", "teaches", "taught", "the class"),
]
SUBJECTS = [("I", False), ("We", False), ("They", False), ("You", False), ("She", True), ("He", True),
            ("My sister", True), ("The farmer", True), ("Our neighbours", False), ("The old man", True)]
TIMES = ["every morning", "on Sundays", "after school", "every evening", "at noon", "in the summer"]


def past_tense_rewrites(seed: int, count: int) -> list[dict]:
    rnd = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < count:
        base, third, past, rest = rnd.choice(VERBS)
        subject, singular = rnd.choice(SUBJECTS)
        time = rnd.choice(TIMES)
        present = f"{subject} {third if singular else base} {rest} {time}."
        if present in seen:
            continue
        seen.add(present)
        rows.append({"sentence": present, "past": f"{subject} {past} {rest} {time}."})
    return rows


# (situation, the sensible way it ends); the other situations' endings are the wrong choices.
SITUATIONS = [
    ("was thirsty after the long run, so {they}", "drank a large glass of cold water."),
    ("saw dark clouds gathering over the hills, so {they}", "took an umbrella before leaving the house."),
    ("could not read the small print on the label, so {they}", "put on a pair of reading glasses."),
    ("noticed that the plants on the balcony were drooping, so {they}", "watered them with the green can."),
    ("was cold in the drafty room, so {they}", "put on a thick wool sweater."),
    ("had a flat tyre on the way to work, so {they}", "pumped it up at the petrol station."),
    ("missed the last bus home, so {they}", "called a taxi from the corner."),
    ("burned the toast while talking on the phone, so {they}", "made two fresh slices."),
    ("found the front door locked and the key missing, so {they}", "rang the bell and waited."),
    ("was getting sleepy while driving at night, so {they}", "stopped at a rest area for a nap."),
    ("spilled coffee across the kitchen table, so {they}", "wiped it up with a cloth."),
    ("wanted to learn to play the guitar, so {they}", "signed up for weekly lessons."),
    ("heard the smoke alarm beeping in the hallway, so {they}", "changed the battery in the alarm."),
    ("had a long list of groceries to buy, so {they}", "took a big bag to the market."),
    ("felt a sharp pain in a tooth, so {they}", "made an appointment with the dentist."),
    ("found the soup far too salty, so {they}", "added some water and potatoes to it."),
    ("could not find a parking space near the shop, so {they}", "parked two streets away and walked."),
    ("wanted to surprise a friend on her birthday, so {they}", "baked her a chocolate cake."),
    ("saw that the printer had run out of paper, so {they}", "loaded a new stack into the tray."),
    ("was late for the morning meeting, so {they}", "sent a message to say sorry."),
    ("had muddy boots after the walk, so {they}", "left them outside the door."),
    ("needed to wake up very early, so {they}", "set an alarm for five o'clock."),
    ("found a wallet lying on the pavement, so {they}", "took it to the police station."),
    ("noticed the phone battery was almost empty, so {they}", "plugged it into the charger."),
    ("wanted to keep the milk fresh, so {they}", "put it back in the fridge."),
    ("got lost in an unfamiliar city, so {they}", "asked a shopkeeper for directions."),
    ("had a headache after staring at the screen, so {they}", "took a break and rested the eyes."),
    ("wanted a quiet place to study, so {they}", "went to the library."),
    ("saw that the dog was hungry, so {they}", "filled its bowl with food."),
    ("dropped a glass on the kitchen floor, so {they}", "swept up the broken pieces carefully."),
    ("had wet hair after the shower, so {they}", "dried it with a towel."),
    ("found the room too dark to read, so {they}", "switched on the lamp."),
    ("wanted to send a parcel to a cousin, so {they}", "took it to the post office."),
    ("heard a knock at the door, so {they}", "went to see who was there."),
    ("noticed the car was almost out of fuel, so {they}", "filled the tank at the next station."),
    ("wanted to get fitter before the summer, so {they}", "started jogging three times a week."),
    ("was hungry at midnight, so {they}", "made a cheese sandwich."),
    ("found a hole in a favourite sock, so {they}", "mended it with a needle and thread."),
    ("saw the bath about to overflow, so {they}", "turned off the tap quickly."),
    ("wanted to remember the meeting time, so {they}", "wrote it in the calendar."),
]
PEOPLE = [("Anna", "she"), ("Tom", "he"), ("Maria", "she"), ("Leo", "he"), ("Sofia", "she"), ("Omar", "he"),
          ("Grace", "she"), ("Ivan", "he"), ("The teacher", "she"), ("My uncle", "he")]


def completions(seed: int, per_situation: int) -> list[dict]:
    rnd = random.Random(seed)
    rows = []
    for situation, ending in SITUATIONS:
        others = [e for _, e in SITUATIONS if e != ending]
        for name, pronoun in rnd.sample(PEOPLE, per_situation):
            choices = [ending, *rnd.sample(others, 3)]
            rnd.shuffle(choices)
            rows.append({"context": f"{name} {situation.format(they=pronoun)}", "endings": choices,
                         "label": choices.index(ending)})
    rnd.shuffle(rows)
    return rows


def main() -> None:
    test = multiple_choice_questions(seed=8)
    fewshot = [q for q in multiple_choice_questions(seed=9) if q["question"] not in {t["question"] for t in test}]
    write_jsonl(HERE / "lmstack_mc.jsonl", test)
    write_jsonl(HERE / "lmstack_mc_fewshot.jsonl", fewshot[:20])
    arithmetic = arithmetic_questions(seed=10, count=80)
    write_jsonl(HERE / "lmstack_arith.jsonl", arithmetic[:60])
    write_jsonl(HERE / "lmstack_arith_fewshot.jsonl", arithmetic[60:])
    complete = completions(seed=12, per_situation=6)
    write_jsonl(HERE / "lmstack_complete.jsonl", complete[:220])
    write_jsonl(HERE / "lmstack_complete_fewshot.jsonl", complete[220:])
    rewrites = past_tense_rewrites(seed=11, count=70)
    write_jsonl(HERE / "lmstack_rewrite.jsonl", rewrites[:60])
    write_jsonl(HERE / "lmstack_rewrite_fewshot.jsonl", rewrites[60:])


if __name__ == "__main__":
    main()
