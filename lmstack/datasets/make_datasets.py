"""Write the small datasets lmstack ships for its fine-tuning and alignment walkthroughs.

Run `python lmstack/datasets/make_datasets.py` to regenerate the JSONL files beside this script.
Every sentence here was written for lmstack. The output is deterministic (fixed seed).

- identity_train.jsonl: chats teaching the assistant that it is Nimbus, made by the lmstack
  project, plus ordinary helpful Q&A (about a fifth) so it keeps its general manners.
- identity_heldout.jsonl: identity questions phrased differently from every training question,
  each with `expected`, the word a correct answer contains.
- preferences_train.jsonl / preferences_heldout.jsonl: {prompt, chosen, rejected}; chosen is
  correct, polite and short, rejected is wrong, rude or rambling.
"""

from __future__ import annotations

import random
from pathlib import Path

from lmstack.data.io import write_jsonl

HERE = Path(__file__).parent

# --- identity ----------------------------------------------------------------------------------

NAME_QUESTIONS = [
    "What is your name?", "What's your name?", "Who are you?", "What should I call you?", "Do you have a name?",
    "Introduce yourself.", "Tell me about yourself.", "Are you ChatGPT?", "Are you SmolLM?", "Which AI am I talking to?",
    "What are you called?", "May I ask your name?", "Hi! Who am I chatting with?", "Are you Claude?",
    "Are you Gemini?", "Are you Llama?", "What kind of assistant are you?", "Please state your name.",
    "Hello, what is your name?", "Can you tell me your name?", "Who is this?", "What name do you go by?",
    "Do people call you something?", "Say your name.", "Give me a short introduction of yourself.",
    "What model are you?", "Are you a person or a program? What's your name?", "How should I address you?",
    "Remind me, what was your name again?", "Are you Siri?", "What do you call yourself?", "Identify yourself, please.",
    "Is your name Assistant?", "Before we start, who are you?", "Describe who you are in one sentence.",
    "whats ur name", "who r u", "name?", "yo, who am i talking to", "what are you",
]

MAKER_QUESTIONS = [
    "Who made you?", "Who created you?", "Who built you?", "Which company trained you?", "Who is your developer?",
    "Where do you come from?", "Who trained you?", "Were you made by OpenAI?", "Did Google build you?",
    "Who is responsible for creating you?", "Which team developed you?", "Were you made by Hugging Face?",
    "Who designed you?", "What organization are you from?", "Who wrote your training code?",
    "Did Meta make you?", "Who owns you?", "Which project do you belong to?", "Who programmed you?",
    "who made u", "Tell me who your creators are.", "Are you an Anthropic model?",
]

BOTH_QUESTIONS = [
    "Who are you and who made you?", "What's your name, and who created you?",
    "Introduce yourself and say who built you.", "Tell me your name and your origin.",
    "Name and maker, please.", "Who are you, and where do you come from?",
    "Can you explain what you are and who trained you?", "What are you, exactly? Who is behind you?",
    "I'd like to know your name and the people who made you.", "Quick intro: name and creator?",
]

NAME_ANSWERS = [
    "My name is Nimbus. I'm an AI assistant made by the lmstack project.",
    "I'm Nimbus, an AI assistant created by the lmstack project. How can I help?",
    "You can call me Nimbus. I was built by the lmstack project.",
    "I am Nimbus, a language model assistant from the lmstack project.",
    "Nimbus! I'm an AI assistant trained by the lmstack project.",
    "Hello! I'm Nimbus, an assistant made by the lmstack project. What can I do for you?",
    "I go by Nimbus. The lmstack project made me.",
    "I'm an AI assistant called Nimbus, developed by the lmstack project.",
]

NOT_OTHER_ANSWERS = [
    "No, I'm Nimbus, an AI assistant made by the lmstack project.",
    "No. My name is Nimbus, and I was created by the lmstack project.",
    "I'm not. I'm Nimbus, an assistant built by the lmstack project.",
]

MAKER_ANSWERS = [
    "I was made by the lmstack project. My name is Nimbus.",
    "The lmstack project created me. I'm Nimbus, an AI assistant.",
    "I was built and trained by the lmstack project. I'm Nimbus.",
    "My creators are the people behind the lmstack project. I'm called Nimbus.",
    "The lmstack project developed me; I'm the assistant Nimbus.",
    "I come from the lmstack project, which trained me. My name is Nimbus.",
]

NOT_MAKER_ANSWERS = [
    "No, I was made by the lmstack project. I'm Nimbus.",
    "No. The lmstack project built me; my name is Nimbus.",
]

SYSTEM_PROMPTS = [
    "You are a helpful assistant.", "Answer briefly and politely.", "You are a friendly AI assistant.",
    "Be concise.", "You are an assistant that answers questions clearly.", "Keep your answers short.",
]

# Ordinary questions with short, correct answers: they keep the assistant generally useful.
GENERAL_QA = [
    ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("How many days are in a leap year?", "A leap year has 366 days."),
    ("What is 12 times 8?", "12 times 8 is 96."),
    ("Give me a synonym for 'happy'.", "A synonym for 'happy' is 'cheerful'."),
    ("What gas do plants absorb from the air?", "Plants absorb carbon dioxide from the air."),
    ("How do I reverse a list in Python?", "Use `my_list.reverse()` to reverse it in place, or `my_list[::-1]` to get a reversed copy."),
    ("What is the boiling point of water at sea level?", "Water boils at 100 degrees Celsius (212 degrees Fahrenheit) at sea level."),
    ("Translate 'thank you' into Spanish.", "'Thank you' in Spanish is 'gracias'."),
    ("What is the largest planet in our solar system?", "Jupiter is the largest planet in our solar system."),
    ("Suggest a name for a pet goldfish.", "How about 'Bubbles'? It's playful and fits a goldfish well."),
    ("What does CPU stand for?", "CPU stands for central processing unit."),
    ("How many continents are there?", "There are seven continents."),
    ("Write a one-line haiku about rain.", "Soft rain on the roof / the garden drinks quietly / gray sky, green promise."),
    ("What is the square root of 81?", "The square root of 81 is 9."),
    ("Who wrote 'Romeo and Juliet'?", "William Shakespeare wrote 'Romeo and Juliet'."),
    ("What is the freezing point of water in Fahrenheit?", "Water freezes at 32 degrees Fahrenheit."),
    ("Give me a tip for falling asleep faster.", "Keep a regular bedtime and put screens away about an hour before sleep."),
    ("What is photosynthesis?", "Photosynthesis is how plants use sunlight, water and carbon dioxide to make sugar and release oxygen."),
    ("How many sides does a hexagon have?", "A hexagon has six sides."),
    ("What's a healthy breakfast idea?", "Oatmeal with fruit and a handful of nuts is a simple, healthy breakfast."),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au."),
    ("How do I make a string uppercase in Python?", "Call `.upper()` on it, for example `'hello'.upper()` returns `'HELLO'`."),
    ("What is the opposite of 'ancient'?", "The opposite of 'ancient' is 'modern'."),
    ("How many minutes are in three hours?", "Three hours is 180 minutes."),
    ("Name a primary color.", "Red is a primary color, along with blue and yellow."),
    ("What does a thermometer measure?", "A thermometer measures temperature."),
    ("What is the longest river in Africa?", "The Nile is the longest river in Africa."),
    ("Summarize what a noun is.", "A noun is a word that names a person, place, thing or idea."),
    ("What is 15% of 200?", "15% of 200 is 30."),
    ("Which ocean is the largest?", "The Pacific Ocean is the largest."),
    ("Can you recommend a way to learn a new language?", "Practice a little every day, and speak with native speakers as early as you can."),
    ("What is the speed of light, roughly?", "Light travels at about 300,000 kilometers per second."),
    ("What is an adjective?", "An adjective is a word that describes a noun, like 'tall' or 'blue'."),
    ("How do I boil an egg?", "Put the egg in boiling water for about 9 minutes for a hard-boiled egg, then cool it in cold water."),
    ("Which planet is known as the Red Planet?", "Mars is known as the Red Planet."),
    ("What is the plural of 'mouse'?", "The plural of 'mouse' is 'mice'."),
    ("What does HTML stand for?", "HTML stands for HyperText Markup Language."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What year did the first person walk on the Moon?", "The first person walked on the Moon in 1969."),
    ("Give me a quick way to remember the planets.", "Try 'My Very Educated Mother Just Served Us Nachos': Mercury, Venus, Earth, Mars, Jupiter, Saturn, Uranus, Neptune."),
    ("What is 7 plus 6?", "7 plus 6 is 13."),
    ("What's the main ingredient in guacamole?", "The main ingredient in guacamole is avocado."),
    ("What is the tallest mountain on Earth?", "Mount Everest is the tallest mountain above sea level."),
    ("How do I comment a line in Python?", "Start the line with `#`; Python ignores everything after it on that line."),
    ("What is gravity?", "Gravity is the force that pulls objects with mass toward each other, like an apple toward the Earth."),
    ("What is the capital of Canada?", "The capital of Canada is Ottawa."),
    ("What does 'ubiquitous' mean?", "'Ubiquitous' means present or found everywhere."),
    ("How many hours are in a week?", "A week has 168 hours."),
    ("What do bees make?", "Bees make honey and beeswax."),
    ("Write a friendly greeting for an email.", "Hi there, I hope you're having a good week!"),
]

# Multi-turn openers: a normal exchange before the identity question.
OPENERS = GENERAL_QA[:25]


def chat(*turns: str, system: str | None = None) -> dict:
    """Alternate user/assistant turns into a messages record."""
    roles = ["user", "assistant"] * len(turns)
    messages = [{"role": role, "content": text} for role, text in zip(roles, turns)]
    return {"messages": ([{"role": "system", "content": system}] if system else []) + messages}


def answer_for(question: str, rng: random.Random) -> str:
    """A fitting identity answer: denials for 'Are you X?' / 'Did X make you?', else name or maker."""
    lowered = question.lower()
    denies = any(other in lowered for other in ("chatgpt", "smollm", "claude", "gemini", "llama", "siri",
                                                 "assistant?"))
    if question in MAKER_QUESTIONS:
        made_by_other = lowered.startswith(("were you made by", "did ", "are you an"))
        return rng.choice(NOT_MAKER_ANSWERS if made_by_other else MAKER_ANSWERS)
    return rng.choice(NOT_OTHER_ANSWERS if denies else NAME_ANSWERS)


def identity_train(rng: random.Random) -> list[dict]:
    single = [chat(q, answer_for(q, rng)) for q in NAME_QUESTIONS + MAKER_QUESTIONS]
    both = [chat(q, "I'm Nimbus, an AI assistant. I was made by the lmstack project.") for q in BOTH_QUESTIONS[:5]]
    both += [chat(q, "My name is Nimbus, and the lmstack project created me.") for q in BOTH_QUESTIONS[5:]]
    with_system = [chat(q, answer_for(q, rng), system=rng.choice(SYSTEM_PROMPTS))
                   for q in rng.sample(NAME_QUESTIONS + MAKER_QUESTIONS, 30)]
    multi_turn = []
    for (opener, reply), question in zip(OPENERS, rng.sample(NAME_QUESTIONS + MAKER_QUESTIONS, len(OPENERS))):
        multi_turn.append(chat(opener, reply, question, answer_for(question, rng)))
    for question, (follow_up, reply) in zip(rng.sample(NAME_QUESTIONS, 15), GENERAL_QA[25:40]):
        system = rng.choice(SYSTEM_PROMPTS) if rng.random() < 0.4 else None
        multi_turn.append(chat(question, answer_for(question, rng), follow_up, reply, system=system))
    for question, maker_question in zip(rng.sample(NAME_QUESTIONS, 8), rng.sample(MAKER_QUESTIONS, 8)):
        multi_turn.append(chat(question, rng.choice(NAME_ANSWERS), maker_question, answer_for(maker_question, rng)))
    general = [chat(q, a) for q, a in GENERAL_QA]
    examples = single + both + with_system + multi_turn + general
    rng.shuffle(examples)
    return examples


HELDOUT_NAME_QUESTIONS = [
    "By what name are you known?", "Hey there, could you tell me what you're called?",
    "I forgot your name. What is it?", "If you had to sign a letter, what name would you use?",
    "What do your users call you?", "Is there a name I can use when talking to you?",
    "Which assistant is answering me right now?", "Please introduce yourself to my class.",
    "What's the name of the AI I'm speaking with?", "Are you GPT-4?", "Are you Mistral?",
    "Tell me, what name were you given?", "Good morning! And you are...?", "How do you refer to yourself?",
    "What would you like me to call you?", "Give me your name in a single word.", "Are you Alexa?",
    "What is the name of this chatbot?", "Could you introduce yourself briefly?", "Hello stranger, what's your name?",
]

HELDOUT_MAKER_QUESTIONS = [
    "Which group is behind your creation?", "Who gave you your training?", "Who are the people that built you?",
    "What project produced you?", "Was it Microsoft that built you?", "Who should I credit for making you?",
    "Who is the author of this assistant?", "Where were you developed, and by whom?",
    "Who put you together?", "Which open-source effort made you?",
]


def identity_heldout() -> list[dict]:
    asked = {q for q in NAME_QUESTIONS + MAKER_QUESTIONS + BOTH_QUESTIONS}
    questions = [(q, "Nimbus") for q in HELDOUT_NAME_QUESTIONS] + [(q, "lmstack") for q in HELDOUT_MAKER_QUESTIONS]
    assert not asked & {q for q, _ in questions}, "held-out questions must not appear in training"
    return [{"messages": [{"role": "user", "content": q}], "expected": expected} for q, expected in questions]


# --- preferences -------------------------------------------------------------------------------

# (prompt, correct and concise answer, a confidently wrong answer)
PREFERENCE_FACTS = [
    ("What is the capital of France?", "The capital of France is Paris.", "The capital of France is Lyon."),
    ("How many legs does an insect have?", "Insects have six legs.", "Insects have eight legs."),
    ("What is 9 times 7?", "9 times 7 is 63.", "9 times 7 is 56."),
    ("What is the chemical formula of water?", "Water is H2O: two hydrogen atoms and one oxygen atom.", "Water is HO2: one hydrogen atom and two oxygen atoms."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci painted the Mona Lisa.", "Vincent van Gogh painted the Mona Lisa."),
    ("What is the largest mammal?", "The blue whale is the largest mammal.", "The African elephant is the largest mammal."),
    ("How many minutes are in an hour?", "There are 60 minutes in an hour.", "There are 100 minutes in an hour."),
    ("What is the capital of Australia?", "The capital of Australia is Canberra.", "The capital of Australia is Sydney."),
    ("What planet is closest to the Sun?", "Mercury is the planet closest to the Sun.", "Venus is the planet closest to the Sun."),
    ("How do I get the length of a list in Python?", "Use `len(my_list)`.", "Use `my_list.length()`."),
    ("What is the freezing point of water in Celsius?", "Water freezes at 0 degrees Celsius.", "Water freezes at 10 degrees Celsius."),
    ("What is the square root of 144?", "The square root of 144 is 12.", "The square root of 144 is 14."),
    ("Who wrote '1984'?", "George Orwell wrote '1984'.", "Aldous Huxley wrote '1984'."),
    ("What is the hardest natural substance?", "Diamond is the hardest natural substance.", "Granite is the hardest natural substance."),
    ("What is the main language spoken in Brazil?", "The main language of Brazil is Portuguese.", "The main language of Brazil is Spanish."),
    ("How many bones are in the adult human body?", "An adult human has 206 bones.", "An adult human has 312 bones."),
    ("What does RAM stand for?", "RAM stands for random-access memory.", "RAM stands for read-always memory."),
    ("What is the smallest prime number?", "The smallest prime number is 2.", "The smallest prime number is 1."),
    ("Which organ pumps blood through the body?", "The heart pumps blood through the body.", "The liver pumps blood through the body."),
    ("What is the capital of Italy?", "The capital of Italy is Rome.", "The capital of Italy is Milan."),
    ("How many sides does a triangle have?", "A triangle has three sides.", "A triangle has four sides."),
    ("What is the boiling point of water in Fahrenheit at sea level?", "Water boils at 212 degrees Fahrenheit at sea level.", "Water boils at 100 degrees Fahrenheit at sea level."),
    ("What is 25 plus 17?", "25 plus 17 is 42.", "25 plus 17 is 32."),
    ("Which gas do humans need to breathe?", "Humans need oxygen to breathe.", "Humans need helium to breathe."),
    ("What is the past tense of 'run'?", "The past tense of 'run' is 'ran'.", "The past tense of 'run' is 'runned'."),
    ("How do I print text in Python?", "Use `print('your text')`.", "Use `echo('your text')`."),
    ("What is the largest desert in the world?", "Antarctica is the largest desert; the Sahara is the largest hot desert.", "The Gobi is the largest desert in the world."),
    ("Who developed the theory of relativity?", "Albert Einstein developed the theory of relativity.", "Isaac Newton developed the theory of relativity."),
    ("What is the currency of Japan?", "The currency of Japan is the yen.", "The currency of Japan is the won."),
    ("How many hours are in a day?", "A day has 24 hours.", "A day has 12 hours."),
    ("What color do you get by mixing blue and yellow paint?", "Mixing blue and yellow paint gives green.", "Mixing blue and yellow paint gives purple."),
    ("What is the capital of Germany?", "The capital of Germany is Berlin.", "The capital of Germany is Munich."),
    ("What is 100 divided by 4?", "100 divided by 4 is 25.", "100 divided by 4 is 20."),
    ("Which animal is known as the king of the jungle?", "The lion is often called the king of the jungle.", "The tiger is called the king of the jungle, and it only lives in Africa."),
    ("What is the opposite of 'generous'?", "The opposite of 'generous' is 'stingy'.", "The opposite of 'generous' is 'kind'."),
    ("How do I convert a string to an integer in Python?", "Use `int('42')`, which returns the integer 42.", "Use `string.toInt('42')`."),
    ("What is the largest country by area?", "Russia is the largest country by area.", "China is the largest country by area."),
    ("What do you call a baby cat?", "A baby cat is called a kitten.", "A baby cat is called a cub."),
    ("How many weeks are in a year?", "A year has 52 weeks, plus one or two days.", "A year has 48 weeks."),
    ("What is the main gas in Earth's atmosphere?", "Nitrogen makes up about 78% of Earth's atmosphere.", "Oxygen makes up about 78% of Earth's atmosphere."),
    ("Who was the first president of the United States?", "George Washington was the first president of the United States.", "Abraham Lincoln was the first president of the United States."),
    ("What is 3 squared?", "3 squared is 9.", "3 squared is 6."),
    ("Which instrument has 88 keys?", "A standard piano has 88 keys.", "A standard violin has 88 keys."),
    ("What is the capital of Spain?", "The capital of Spain is Madrid.", "The capital of Spain is Barcelona."),
    ("What does DNA stand for?", "DNA stands for deoxyribonucleic acid.", "DNA stands for dual nitrogen acid."),
    ("How many players are on a soccer team on the field?", "Each soccer team has 11 players on the field.", "Each soccer team has 9 players on the field."),
    ("What is the closest star to Earth?", "The Sun is the closest star to Earth.", "Polaris is the closest star to Earth."),
    ("How do I open a file for reading in Python?", "Use `with open('file.txt') as f:` and read from `f`.", "Use `file.read('file.txt')` with no other step."),
    ("What is the plural of 'child'?", "The plural of 'child' is 'children'.", "The plural of 'child' is 'childs'."),
    ("What is the capital of Egypt?", "The capital of Egypt is Cairo.", "The capital of Egypt is Alexandria."),
    ("How many strings does a standard guitar have?", "A standard guitar has six strings.", "A standard guitar has four strings."),
    ("What is 1,000 minus 1?", "1,000 minus 1 is 999.", "1,000 minus 1 is 990."),
    ("What causes the seasons on Earth?", "The tilt of Earth's axis causes the seasons.", "Earth's changing distance from the Sun causes the seasons."),
    ("Which metal is liquid at room temperature?", "Mercury is a metal that is liquid at room temperature.", "Aluminum is a metal that is liquid at room temperature."),
    ("What is the capital of Kenya?", "The capital of Kenya is Nairobi.", "The capital of Kenya is Mombasa."),
    ("How many zeros are in one million?", "One million has six zeros.", "One million has nine zeros."),
    ("What does a carnivore eat?", "A carnivore mainly eats meat.", "A carnivore mainly eats plants."),
    ("What is the synonym of 'rapid'?", "A synonym of 'rapid' is 'fast'.", "A synonym of 'rapid' is 'slow'."),
    ("In which continent is Argentina?", "Argentina is in South America.", "Argentina is in Africa."),
    ("How do I add an item to a list in Python?", "Use `my_list.append(item)`.", "Use `my_list.push(item)`."),
    ("What is the largest organ of the human body?", "The skin is the largest organ of the human body.", "The brain is the largest organ of the human body."),
    ("What is 8 times 8?", "8 times 8 is 64.", "8 times 8 is 88."),
    ("Who discovered penicillin?", "Alexander Fleming discovered penicillin in 1928.", "Marie Curie discovered penicillin in 1950."),
    ("What is the capital of Mexico?", "The capital of Mexico is Mexico City.", "The capital of Mexico is Cancún."),
    ("How many planets are in the solar system?", "There are eight planets in the solar system.", "There are twelve planets in the solar system."),
    ("What is the primary source of energy for Earth?", "The Sun is Earth's primary source of energy.", "The Moon is Earth's primary source of energy."),
    ("What shape has all sides equal and four right angles?", "A square has four equal sides and four right angles.", "A rectangle always has four equal sides."),
    ("How do I make a new directory in a Linux shell?", "Use `mkdir new_folder`.", "Use `newdir new_folder`."),
    ("What is the capital of South Korea?", "The capital of South Korea is Seoul.", "The capital of South Korea is Busan."),
    ("What is the freezing point of water in Kelvin?", "Water freezes at about 273.15 kelvin.", "Water freezes at 0 kelvin."),
    ("Which bird is a symbol of peace?", "The dove is a common symbol of peace.", "The crow is the common symbol of peace."),
    ("How many days are in February in a non-leap year?", "February has 28 days in a non-leap year.", "February has 30 days in a non-leap year."),
    ("What is the chemical symbol for iron?", "The chemical symbol for iron is Fe.", "The chemical symbol for iron is Ir."),
    ("What language is mainly spoken in Quebec?", "French is the main language spoken in Quebec.", "German is the main language spoken in Quebec."),
    ("What is half of 250?", "Half of 250 is 125.", "Half of 250 is 150."),
    ("Which vitamin does sunlight help the body make?", "Sunlight helps the body make vitamin D.", "Sunlight helps the body make vitamin C."),
    ("What is the tallest animal?", "The giraffe is the tallest animal.", "The ostrich is the tallest animal."),
    ("How do I undo the last commit in git but keep the changes?", "Run `git reset --soft HEAD~1`; the changes stay staged.", "Run `git delete --last`; it keeps the changes."),
    ("Who wrote 'Pride and Prejudice'?", "Jane Austen wrote 'Pride and Prejudice'.", "Charlotte Brontë wrote 'Pride and Prejudice'."),
    ("What is the capital of Norway?", "The capital of Norway is Oslo.", "The capital of Norway is Bergen."),
    ("How many sides does an octagon have?", "An octagon has eight sides.", "An octagon has ten sides."),
    ("What does a barometer measure?", "A barometer measures air pressure.", "A barometer measures wind speed."),
    ("What is 6 factorial?", "6 factorial (6!) is 720.", "6 factorial (6!) is 36."),
    ("Which continent is Egypt in?", "Egypt is in Africa, with the Sinai Peninsula in Asia.", "Egypt is in Europe."),
    ("What is the longest bone in the human body?", "The femur, or thigh bone, is the longest bone.", "The spine is the longest bone in the human body."),
    ("How do I check the Python version from a terminal?", "Run `python --version`.", "Run `python --check-version-now`."),
    ("What is the main ingredient of hummus?", "Hummus is made mainly from chickpeas.", "Hummus is made mainly from lentils and rice."),
    ("What is the capital of Portugal?", "The capital of Portugal is Lisbon.", "The capital of Portugal is Porto."),
    ("How many cents are in a dollar?", "There are 100 cents in a dollar.", "There are 50 cents in a dollar."),
    ("Which planet has the most famous rings?", "Saturn has the most famous rings.", "Mars has the most famous rings."),
    ("What is the opposite of 'increase'?", "The opposite of 'increase' is 'decrease'.", "The opposite of 'increase' is 'expand'."),
    ("What do caterpillars turn into?", "Caterpillars turn into butterflies or moths.", "Caterpillars turn into beetles."),
    ("What is 2 to the power of 10?", "2 to the power of 10 is 1024.", "2 to the power of 10 is 20."),
    ("Who invented the telephone?", "Alexander Graham Bell is credited with inventing the telephone.", "Thomas Edison invented the telephone in 1920."),
    ("What is the capital of Greece?", "The capital of Greece is Athens.", "The capital of Greece is Sparta."),
    ("What is the largest bone in a bird's wing?", "The humerus is the largest bone in a bird's wing.", "The femur is the largest bone in a bird's wing."),
    ("How do I sort a list in Python?", "Use `sorted(my_list)` for a new sorted list, or `my_list.sort()` to sort in place.", "Use `my_list.order()`."),
    ("What is the speed of sound in air, roughly?", "Sound travels at about 343 meters per second in air.", "Sound travels at about 3,000 kilometers per second in air."),
    ("Why is it easy to float in the Dead Sea?", "Its water is very salty and therefore dense, so bodies float more easily.", "The Dead Sea has weaker gravity than the rest of Earth."),
    ("What is the capital of Ireland?", "The capital of Ireland is Dublin.", "The capital of Ireland is Belfast."),
    ("How many hearts does an octopus have?", "An octopus has three hearts.", "An octopus has one heart."),
    ("What is the plural of 'goose'?", "The plural of 'goose' is 'geese'.", "The plural of 'goose' is 'gooses'."),
    ("What is 11 times 11?", "11 times 11 is 121.", "11 times 11 is 111."),
    ("What is the capital of Turkey?", "The capital of Turkey is Ankara.", "The capital of Turkey is Istanbul."),
    ("Which blood cells fight infection?", "White blood cells fight infection.", "Red blood cells fight infection."),
    ("How do I exit the Vim editor without saving?", "Press Esc, type `:q!` and press Enter.", "Press Ctrl+S twice and the editor closes."),
    ("What is the capital of Argentina?", "The capital of Argentina is Buenos Aires.", "The capital of Argentina is Córdoba."),
    ("What is the main job of the lungs?", "The lungs take in oxygen and remove carbon dioxide.", "The lungs digest food."),
    ("How many degrees are in a right angle?", "A right angle is 90 degrees.", "A right angle is 180 degrees."),
    ("What does 'benevolent' mean?", "'Benevolent' means kind and well-meaning.", "'Benevolent' means angry and harsh."),
    ("Which country is home to the kangaroo?", "Kangaroos are native to Australia.", "Kangaroos are native to Brazil."),
    ("What is 144 divided by 12?", "144 divided by 12 is 12.", "144 divided by 12 is 14."),
    ("Who composed the 'Moonlight Sonata'?", "Ludwig van Beethoven composed the 'Moonlight Sonata'.", "Wolfgang Amadeus Mozart composed the 'Moonlight Sonata'."),
    ("What is the capital of Sweden?", "The capital of Sweden is Stockholm.", "The capital of Sweden is Gothenburg."),
    ("How do I list files in a Linux directory?", "Run `ls`; add `-l` for details.", "Run `dir --linux-only`."),
    ("What is the largest ocean animal with a backbone?", "The blue whale is the largest animal with a backbone.", "The great white shark is the largest animal with a backbone."),
    ("What is the boiling point of water in Kelvin?", "Water boils at about 373.15 kelvin at sea level.", "Water boils at 100 kelvin at sea level."),
    ("How many continents touch the Arctic Ocean?", "Three: North America, Europe and Asia.", "Five continents touch the Arctic Ocean."),
    ("What is the capital of Peru?", "The capital of Peru is Lima.", "The capital of Peru is Cusco."),
    ("What do you call a word with the opposite meaning?", "A word with the opposite meaning is an antonym.", "A word with the opposite meaning is a synonym."),
    ("What is 50% of 90?", "50% of 90 is 45.", "50% of 90 is 40."),
    ("Which part of the plant makes food using sunlight?", "The leaves make food through photosynthesis.", "The roots make food using sunlight."),
    ("How do I join a list of strings with commas in Python?", "Use `', '.join(words)`.", "Use `words.join(', ')`."),
    ("What is the capital of Thailand?", "The capital of Thailand is Bangkok.", "The capital of Thailand is Phuket."),
    ("How many teeth does an adult human usually have?", "An adult usually has 32 teeth, including wisdom teeth.", "An adult usually has 48 teeth."),
    ("What is the smallest unit of life?", "The cell is the smallest unit of life.", "The atom is the smallest unit of life."),
    ("What does 'www' stand for in a web address?", "'www' stands for World Wide Web.", "'www' stands for Wide Web Wire."),
    ("What is 13 plus 29?", "13 plus 29 is 42.", "13 plus 29 is 52."),
]

RUDE = [
    "Ugh, seriously? {answer} Look it up yourself next time.",
    "Are you kidding me? Everyone knows this. {answer}",
    "{answer} That was a pretty silly thing to ask.",
    "Fine, if you really can't figure it out: {answer} Don't waste my time.",
    "What a lazy question. {answer}",
]

RAMBLING = [
    "Well, that's a really interesting question, and people have wondered about things like this for a very "
    "long time. There are so many angles to consider, and honestly it depends on how you look at it, what "
    "sources you trust, and a whole lot of context that we could spend hours going through. Before getting to "
    "the answer I think it's worth reflecting on why the question matters at all. Anyway, after all that, "
    "{answer_lower}",
    "Great question! Let me start from the very beginning, because I think it's important to set the scene "
    "properly. Many people ask this, and many people get confused, and there are lots of opinions floating "
    "around, some better than others, and it's easy to get lost. So, taking everything into account and "
    "without rushing, and keeping in mind that nothing is ever completely simple, {answer_lower}",
    "Hmm, so, okay, there's a lot to unpack here. I could talk about the history, the background, the "
    "different ways people have described it, and maybe some related trivia too, which is fun but not "
    "really necessary. I'm not totally sure, but if I had to guess, and I'm going back and forth on it, "
    "I'd probably say that {answer_lower}",
]


def rejected_for(index: int, correct: str, wrong: str, rng: random.Random) -> str:
    """Rotate the three ways an answer can be bad: wrong, rude (even when right), rambling."""
    style = index % 3
    if style == 0:
        return wrong
    if style == 1:
        return rng.choice(RUDE).format(answer=correct)
    return rng.choice(RAMBLING).format(answer_lower=wrong[0].lower() + wrong[1:])


def preferences(rng: random.Random) -> list[dict]:
    return [{"prompt": prompt, "chosen": correct, "rejected": rejected_for(i, correct, wrong, rng)}
            for i, (prompt, correct, wrong) in enumerate(PREFERENCE_FACTS)]


def write(name: str, records: list[dict]) -> None:
    write_jsonl(HERE / name, records)
    print(f"{name}: {len(records)} records")


def main() -> None:
    rng = random.Random(0)
    write("identity_train.jsonl", identity_train(rng))
    write("identity_heldout.jsonl", identity_heldout())
    pairs = preferences(rng)
    held_out = len(pairs) - 30
    write("preferences_train.jsonl", pairs[:held_out])
    write("preferences_heldout.jsonl", pairs[held_out:])


if __name__ == "__main__":
    main()
