"""Generate the text-description pools shipped in ``vision_lens/data/text_pools/``.

TextSpan (Gandelsman et al. 2024, §4.1) needs a large, diverse pool of image descriptions; the
paper's 3,498 sentences came from prompting ChatGPT. Here the pools are generated
deterministically from hand-written word lists and templates, so that they can be rebuilt and
audited:

* ``general.txt``: >= 3,000 distinct general image descriptions: colours, textures and
  materials, patterns, shapes, counts, letters and numbers, objects, animals, people, scenes and
  locations (including geolocation, "Photo taken in Paris, France"), art and photo styles,
  lighting, weather and time, viewpoints, moods, sizes and positions.
* ``shapes.txt``: descriptions for the shapes world (colours, shapes, positions, sizes,
  textures, backgrounds, counts and their combinations, built from
  ``vision_lens.shapes.VOCABULARY`` so they stay in sync), plus distractors from outside it.

Usage::

    python scripts/make_text_pools.py            # rewrite both pools
    python scripts/make_text_pools.py --check    # fail if the committed files are out of date

Output is sorted by category in generation order, deduplicated (case-insensitively), one
description per line, after a ``#`` header line that ``vision_lens.text_pool`` skips.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "vision_lens" / "data" / "text_pools"
SEED = 2024


def _split(words: str) -> list[str]:
    """A word list written as one ``;``-separated string (kept compact by the formatter)."""
    return [" ".join(w.split()) for w in words.split(";") if w.strip()]


# ---------------------------------------------------------------------------------- word lists
COLORS = _split(
    """
    red; green; blue; yellow; orange; purple; pink; cyan; magenta; brown; black; white; gray;
    beige; turquoise; teal; navy blue; maroon; olive green; lime green; gold; silver; bronze;
    crimson; scarlet; lavender; violet; indigo; peach; coral; mint green; emerald green; sky
    blue; royal blue; burgundy; mustard yellow; cream; ivory; charcoal; rust; salmon; khaki;
    tan; amber
    """
)
COLOR_TEMPLATES = _split(
    """
    a photo with a dominant {} color; an image in {} tones; a {} object; a {} background;
    something painted {}; a picture where everything is {}; a bright {} color; a dark {} shade
    """
)
COLOR_PAIR_TEMPLATES = ["{} and {} colors", "a {} object on a {} background"]

TEXTURES = _split(
    """
    rough; smooth; glossy; matte; fuzzy; furry; hairy; wrinkled; cracked; rusty; polished;
    shiny; grainy; bumpy; silky; velvety; scaly; feathery; spiky; woolly; slimy; sandy; muddy;
    icy; wet; dusty; metallic; woven; knitted; leathery; porous; crumpled; frosted; translucent;
    transparent; reflective; rippled; mossy; weathered; embossed
    """
)
TEXTURE_TEMPLATES = [
    "a {} texture",
    "a close-up of a {} surface",
    "an object with a {} finish",
    "a photo showing {} material",
]
MATERIALS = _split(
    """
    wood; metal; glass; stone; marble; brick; concrete; plastic; paper; cardboard; fabric;
    leather; denim; silk; wool; cotton; rubber; ceramic; porcelain; clay; steel; copper;
    aluminum; gold; ice; sand; water; bark; straw; bamboo; granite; velvet; lace; foam
    """
)
MATERIAL_TEMPLATES = ["an object made of {}", "a {} surface", "a texture of {}"]

PATTERNS = _split(
    """
    striped; polka dot; checkered; plaid; floral; zigzag; paisley; herringbone; camouflage;
    leopard print; zebra print; tie-dye; geometric; houndstooth; chevron; honeycomb; spiral;
    wavy; dotted; grid; mosaic; marbled; swirly; tartan; argyle; speckled; dappled; crosshatched
    """
)
PATTERN_TEMPLATES = [
    "a {} pattern",
    "an image with a {} pattern",
    "a fabric with a {} design",
    "a surface covered in a {} pattern",
    "a {} wallpaper",
]

SHAPES = _split(
    """
    circle; square; triangle; rectangle; oval; star; heart; diamond; hexagon; pentagon; octagon;
    crescent; cross; arrow; spiral; ring; cube; sphere; cylinder; cone; pyramid; zigzag line;
    curved line; straight line; dot; arch; wave; ellipse
    """
)
SHAPE_TEMPLATES = _split(
    """
    a {} shape; an image of a {}; an object shaped like a {}; a drawing of a {}; a pattern of
    {}s; a large {}; a small {}
    """
)

NUMBER_WORDS = _split(
    """
    one; two; three; four; five; six; seven; eight; nine; ten; eleven; twelve; a dozen; many; a
    few; several; dozens of; hundreds of
    """
)
COUNT_NOUNS = [
    ("object", "objects"),
    ("person", "people"),
    ("dog", "dogs"),
    ("cat", "cats"),
    ("bird", "birds"),
    ("car", "cars"),
    ("tree", "trees"),
    ("flower", "flowers"),
    ("apple", "apples"),
    ("ball", "balls"),
    ("book", "books"),
    ("cup", "cups"),
    ("chair", "chairs"),
    ("building", "buildings"),
    ("boat", "boats"),
    ("window", "windows"),
    ("coin", "coins"),
    ("candle", "candles"),
    ("shape", "shapes"),
    ("star", "stars"),
]
COUNT_TEMPLATES = ["an image with {}", "a photo of {}", "{} in a row"]

LETTERS = [chr(c) for c in range(ord("A"), ord("Z") + 1)]
LETTER_TEMPLATES = [
    "the letter {}",
    "a sign with the letter {}",
    "a large letter {} printed on a page",
]
NUMBERS = [str(n) for n in range(0, 21)] + ["25", "50", "100", "1000", "2024"]
NUMBER_TEMPLATES = ["the number {}", "a sign showing the number {}", "a digital display reading {}"]
TEXT_PHRASES = _split(
    """
    a page of handwritten text; a street sign with text; a book cover with a title; a poster
    with large letters; a menu with prices; a license plate; a newspaper page; a calendar page;
    a clock face with numbers; a keyboard with letters; a scoreboard with numbers; a barcode; a
    QR code; graffiti lettering; a neon sign with words; a handwritten note; a typewritten
    letter; a chalkboard with math; a price tag; a ticket with printed numbers; a word written
    in cursive; a logo with text; a caption at the bottom of the image; a watermark; a text
    overlay on a photo; an equation written on a whiteboard; a map with labels; a chart with
    numbers; a birthday card with a message; subtitles on a screen
    """
)

OBJECTS = _split(
    """
    chair; table; sofa; bed; lamp; clock; mirror; vase; bottle; cup; mug; plate; bowl; fork;
    knife; spoon; teapot; kettle; frying pan; refrigerator; microwave; oven; toaster; blender;
    laptop; computer; keyboard; mouse; smartphone; television; camera; headphones; microphone;
    guitar; piano; violin; drum; trumpet; book; notebook; pencil; pen; backpack; suitcase;
    umbrella; hat; shoe; boot; sock; shirt; dress; jacket; scarf; glove; watch; ring; necklace;
    bracelet; sunglasses; wallet; key; lock; hammer; screwdriver; wrench; saw; ladder; bucket;
    broom; candle; light bulb; fan; bicycle; motorcycle; car; truck; bus; train; airplane;
    helicopter; boat; sailboat; ship; tractor; skateboard; surfboard; kite; balloon; ball;
    soccer ball; basketball; tennis racket; baseball bat; teddy bear; doll; toy car; puzzle;
    chess board; dice; playing cards; coin; banknote; flag; trophy; medal; crown; sword; shield;
    tent; bench; fence; mailbox; traffic light; fire hydrant; street lamp; bridge; tower;
    lighthouse; windmill; castle; church; house; barn; skyscraper; statue; fountain; apple;
    banana; orange; lemon; strawberry; grapes; watermelon; pineapple; cherry; pear; tomato;
    carrot; broccoli; potato; onion; mushroom; pepper; corn; bread; sandwich; pizza; hamburger;
    hot dog; cake; cookie; donut; ice cream; chocolate; cheese; egg; salad; soup; sushi; pasta;
    rice; coffee; tea; juice; wine glass; flower; rose; sunflower; tulip; tree; palm tree;
    cactus; leaf; potted plant; rock; shell; feather; pillow; blanket; rug; curtain; window;
    door; stairs; basket; box; gift box; envelope; map; globe; telescope; microscope; robot;
    drone; rocket; satellite
    """
)
OBJECT_TEMPLATES = ["a photo of a {}", "a close-up of a {}", "an image containing a {}"]

ANIMALS = _split(
    """
    dog; puppy; cat; kitten; horse; cow; pig; sheep; goat; chicken; rooster; duck; goose;
    turkey; rabbit; hamster; mouse; rat; squirrel; fox; wolf; bear; polar bear; panda; koala;
    kangaroo; lion; tiger; leopard; cheetah; jaguar; elephant; giraffe; zebra; rhinoceros;
    hippopotamus; camel; deer; moose; monkey; gorilla; chimpanzee; sloth; raccoon; hedgehog;
    bat; owl; eagle; hawk; parrot; penguin; flamingo; swan; pigeon; crow; seagull; hummingbird;
    peacock; ostrich; pelican; heron; woodpecker; frog; toad; turtle; tortoise; snake; lizard;
    crocodile; alligator; chameleon; iguana; fish; goldfish; shark; whale; dolphin; octopus;
    jellyfish; crab; lobster; starfish; seal; walrus; otter; beaver; butterfly; bee; ant;
    spider; ladybug; dragonfly; snail; worm; mosquito; beetle; grasshopper; scorpion; bison;
    donkey; llama; alpaca
    """
)
ANIMAL_TEMPLATES = ["a photo of a {}", "a {} in the wild", "a close-up of a {}'s face"]
BIRD_PLACES = ["on water", "on land", "in a forest", "flying in the sky", "on a beach"]
BIRDS = _split(
    """
    duck; seagull; eagle; heron; sparrow; pelican; parrot; owl
    """
)

PEOPLE = _split(
    """
    a man; a woman; a child; a baby; a boy; a girl; an old man; an old woman; a teenager; a
    family; a couple; a group of friends; a crowd of people; a soldier; a doctor; a nurse; a
    chef; a police officer; a firefighter; a farmer; a teacher; a student; an athlete; a runner;
    a swimmer; a dancer; a musician; a singer; a painter; a construction worker; a businessman;
    a scientist; a pilot; a clown; a bride; a groom; a tourist; a surfer; a skier; a cyclist; a
    fisherman; a cowboy; a knight; a king; a queen; a monk; a photographer; a waiter; a
    mechanic; a gardener; an astronaut; a baseball player; a soccer player; a basketball player;
    a boxer
    """
)
PEOPLE_TEMPLATES = ["a photo of {}", "a portrait of {}", "{} smiling at the camera"]
ACTIONS = _split(
    """
    running; walking; sitting; standing; jumping; sleeping; eating; drinking; reading; writing;
    cooking; dancing; singing; swimming; climbing; laughing; crying; playing; working; talking
    on the phone; riding a bicycle; driving a car; holding an umbrella; waving; hugging
    """
)
ACTION_SUBJECTS = ["a man", "a woman", "a child", "people", "a dog"]
BODY = _split(
    """
    a close-up of a face; a hand; two hands; a pair of eyes; a smile; long hair; curly hair; a
    beard; tattoos on an arm; feet in the sand; a silhouette of a person; a person seen from
    behind; a person wearing glasses; a person wearing a hat; a person in a red dress; a person
    in a suit; a person in a uniform; a person in traditional clothing; a masked person; a
    person with a backpack
    """
)

SCENES = _split(
    """
    a beach; a forest; a jungle; a desert; a mountain; a snowy mountain; a valley; a canyon; a
    cave; a waterfall; a river; a lake; an ocean; a harbor; an island; a field of grass; a
    meadow; a farm; a vineyard; a garden; a park; a playground; a city street; a highway; a
    parking lot; a bridge over a river; a train station; an airport; a subway station; a
    shopping mall; a supermarket; a market; a restaurant; a cafe; a bar; a kitchen; a living
    room; a bedroom; a bathroom; an office; a classroom; a library; a museum; a hospital; a
    church interior; a stadium; a swimming pool; a gym; a concert; a theater; a factory; a
    construction site; a warehouse; a laboratory; a rooftop; a balcony; a backyard; a village; a
    small town; a skyline; a castle; ancient ruins; a temple; a palace; a lighthouse on a cliff;
    a swamp; a marsh; a glacier; a volcano; a sand dune; a rice field; a wheat field; a bamboo
    forest; a coral reef; an underwater scene; outer space; a starry night sky; the moon; a
    sunset over the sea; a rainy street; a foggy forest; a frozen lake; an autumn forest; a
    cherry blossom park; a tropical beach; a ski resort; a campsite; a tunnel; an alley; a
    courtyard; a pier; a dock; a barn interior
    """
)
SCENE_TEMPLATES = ["a photo of {}", "a landscape with {}", "an image taken in {}"]

PLACES = _split(
    """
    Paris, France; London, England; New York City; Tokyo, Japan; Rome, Italy; Venice, Italy;
    Barcelona, Spain; Madrid, Spain; Berlin, Germany; Amsterdam; Istanbul, Turkey; Moscow,
    Russia; Cairo, Egypt; Marrakech, Morocco; Cape Town, South Africa; Nairobi, Kenya; Dubai;
    Mumbai, India; Delhi, India; Beijing, China; Shanghai, China; Hong Kong; Seoul, South Korea;
    Bangkok, Thailand; Singapore; Sydney, Australia; Melbourne, Australia; Auckland, New
    Zealand; Rio de Janeiro, Brazil; Buenos Aires, Argentina; Lima, Peru; Mexico City; Havana,
    Cuba; San Francisco; Los Angeles; Las Vegas; Chicago; Miami; Toronto; Vancouver, Canada;
    Reykjavik, Iceland; Oslo, Norway; Stockholm, Sweden; Prague, Czech Republic; Vienna,
    Austria; Athens, Greece; Lisbon, Portugal; Dublin, Ireland; Edinburgh, Scotland; Jerusalem;
    Kyoto, Japan; Hanoi, Vietnam; Bali, Indonesia; the Swiss Alps; the Sahara desert; the Amazon
    rainforest; the Grand Canyon; Antarctica; the Arctic; the Himalayas; Patagonia; the Scottish
    Highlands; Tuscany, Italy; Provence, France; Hawaii; Alaska; Texas; the Caribbean; Siberia;
    Mongolia; Nepal; Egypt; India; China; Japan; Brazil; Mexico; Canada; Australia; Africa;
    Europe; South America
    """
)
PLACE_TEMPLATES = ["a photo taken in {}", "a street scene in {}", "a landmark in {}"]

STYLES = _split(
    """
    an oil painting; a watercolor painting; a pencil sketch; a charcoal drawing; an ink drawing;
    a cartoon; an anime illustration; a comic book panel; a pixel art image; a 3D rendering; a
    low-poly render; a vector illustration; a children's drawing; a mosaic; a stained glass
    window; a graffiti mural; a collage; a woodcut print; an engraving; a pop art image; an
    impressionist painting; a cubist painting; a surrealist painting; an abstract painting; a
    minimalist design; a baroque painting; a renaissance painting; an art deco poster; a vintage
    poster; a propaganda poster; a tattoo design; a blueprint; a technical diagram; an
    infographic; a map; a screenshot; a video game scene; a movie still; a black and white
    photo; a sepia photo; a vintage photograph; a polaroid photo; a film photograph; a blurry
    photo; a long exposure photo; a macro photograph; a fisheye photo; a panoramic photo; a
    tilt-shift photo; an aerial photo; a satellite image; an x-ray image; a thermal image; a
    microscope image; a selfie; a studio portrait; a product photo; a stock photo; a news photo;
    a fashion photo; a food photo; a wedding photo; a sports photo; a street photo; a security
    camera image; a drawing on paper; an embroidery; a sculpture; a clay model; a paper cutout;
    an origami figure; a double exposure photo; a high contrast photo; a low resolution image;
    an overexposed photo; an underexposed photo; a noisy photo; a photo with a vignette; a
    glitch art image
    """
)
STYLE_TEMPLATES = ["{}", "{} of a landscape", "{} of a person"]

LIGHTING = _split(
    """
    bright sunlight; soft light; harsh shadows; dim light; candlelight; neon lights;
    backlighting; golden hour light; blue hour light; studio lighting; moonlight; spotlight;
    fluorescent light; colorful lights; dramatic lighting; natural light
    """
)
LIGHTING_TEMPLATES = ["a photo with {}", "a scene lit by {}"]
WEATHER_TIME = _split(
    """
    a sunny day; a cloudy day; a rainy day; a snowy day; a foggy morning; a stormy night; a
    windy day; a clear night; sunrise; sunset; dusk; dawn; midday; nighttime; winter; summer;
    spring; autumn; a heat wave; a thunderstorm; a rainbow; lightning; a blizzard; a sandstorm
    """
)
WEATHER_TEMPLATES = ["a photo taken on {}", "a landscape during {}", "an outdoor scene at {}"]

VIEWPOINTS = _split(
    """
    a close-up view; a wide-angle view; a bird's eye view; a worm's eye view; a side view; a
    front view; a rear view; a top-down view; a view from far away; a view through a window; a
    reflection in a mirror; a view through a fence; a view from inside a car; an
    over-the-shoulder view; a symmetrical composition; an off-center composition; a shallow
    depth of field; a blurred background; a cluttered scene; an empty scene; a crowded scene;
    negative space; a frame within a frame; a diagonal composition
    """
)
VIEWPOINT_TEMPLATES = ["a photo with {}", "{}"]

MOODS = _split(
    """
    happy; sad; peaceful; calm; serene; joyful; gloomy; melancholic; lonely; romantic;
    mysterious; eerie; scary; creepy; tense; dramatic; energetic; chaotic; playful; cozy;
    nostalgic; dreamy; whimsical; elegant; luxurious; rustic; futuristic; vintage; modern;
    ancient; festive; solemn; hopeful; angry; funny; cute; majestic; warm; cold; vibrant; dull;
    bleak
    """
)
MOOD_TEMPLATES = ["a {} atmosphere", "a {} scene", "an image that feels {}"]

SIZES = _split(
    """
    tiny; small; medium-sized; large; huge; giant; miniature; tall; short; wide; narrow; long;
    thin; thick
    """
)
SIZE_NOUNS = ["object", "animal", "building", "person", "plant", "vehicle"]
POSITIONS = _split(
    """
    the top left corner; the top right corner; the bottom left corner; the bottom right corner;
    the center; the left side; the right side; the top; the bottom; the foreground; the
    background; the middle of the frame
    """
)
POSITION_TEMPLATES = ["an object in {}", "a person in {} of the image", "something small in {}"]


# ---------------------------------------------------------------------------------- helpers
def _article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def _fill(templates: Iterable[str], words: Iterable[str]) -> list[str]:
    return [t.format(w) for w in words for t in templates]


def _fix_articles(text: str) -> str:
    words = text.split(" ")
    for i in range(len(words) - 1):
        if words[i] in ("a", "A") and words[i + 1][:1].lower() in "aeiou":
            words[i] = "an" if words[i] == "a" else "An"
    return " ".join(words)


def _sample(items: list[str], k: int, rng: random.Random) -> list[str]:
    return items if len(items) <= k else rng.sample(items, k)


def dedupe(texts: Iterable[str]) -> list[str]:
    """Keep the first occurrence of every text (case- and whitespace-insensitive)."""
    seen: set[str] = set()
    out = []
    for text in texts:
        text = " ".join(text.split())
        key = text.lower()
        if text and key not in seen:
            seen.add(key)
            out.append(text)
    return out


# ---------------------------------------------------------------------------------- pools
def general_pool() -> list[str]:
    rng = random.Random(SEED)
    texts: list[str] = []
    texts += _fill(COLOR_TEMPLATES, COLORS)
    pairs = [(a, b) for a, b in itertools.permutations(COLORS[:24], 2)]
    texts += _sample([t.format(a, b) for a, b in pairs for t in COLOR_PAIR_TEMPLATES], 160, rng)
    texts += _fill(TEXTURE_TEMPLATES, TEXTURES)
    texts += _fill(MATERIAL_TEMPLATES, MATERIALS)
    texts += _fill(PATTERN_TEMPLATES, PATTERNS)
    texts += _fill(SHAPE_TEMPLATES, SHAPES)
    counts, other_counts = [], []
    for number, (single, plural) in itertools.product(NUMBER_WORDS, COUNT_NOUNS):
        noun = single if number == "one" else plural
        counts.append(COUNT_TEMPLATES[0].format(f"{number} {noun}"))
        other_counts += [t.format(f"{number} {noun}") for t in COUNT_TEMPLATES[1:]]
    texts += counts + _sample(other_counts, 160, rng)
    texts += _fill(LETTER_TEMPLATES, LETTERS)
    texts += _fill(NUMBER_TEMPLATES, NUMBERS)
    texts += TEXT_PHRASES
    texts += _fill(OBJECT_TEMPLATES, OBJECTS)
    colored = [f"a {c} {o}" for c in COLORS[:20] for o in OBJECTS[:120]]
    texts += _sample(colored, 200, rng)
    texts += _fill(ANIMAL_TEMPLATES, ANIMALS)
    texts += [f"a {b} {p}" for b in BIRDS for p in BIRD_PLACES]
    texts += _fill(PEOPLE_TEMPLATES, PEOPLE)
    texts += [f"{s} {a}" for s in ACTION_SUBJECTS for a in ACTIONS]
    texts += BODY
    texts += _fill(SCENE_TEMPLATES, SCENES)
    texts += _fill(PLACE_TEMPLATES, PLACES)
    texts += _fill(STYLE_TEMPLATES, STYLES)
    texts += _fill(LIGHTING_TEMPLATES, LIGHTING)
    texts += _fill(WEATHER_TEMPLATES, WEATHER_TIME)
    texts += _fill(VIEWPOINT_TEMPLATES, VIEWPOINTS)
    texts += _fill(MOOD_TEMPLATES, MOODS)
    texts += [f"a {s} {n}" for s in SIZES for n in SIZE_NOUNS]
    texts += _fill(POSITION_TEMPLATES, POSITIONS)
    return dedupe(_fix_articles(t) for t in texts)


def shapes_pool() -> list[str]:
    sys.path.insert(0, str(ROOT))
    from vision_lens.shapes import BACKGROUNDS, COLORS, POSITIONS, SHAPES, SIZES, TEXTURES

    rng = random.Random(SEED + 1)
    texts: list[str] = []
    # single attributes
    texts += _fill(
        [
            "a {} object",
            "a {} shape",
            "something {}",
            "an image with a {} color",
            "a {} thing",
            "the color {}",
        ],
        COLORS,
    )
    texts += _fill(
        ["a {}", "a {} shape", "an image of a {}", "a picture of a {}", "a single {}"], SHAPES
    )
    texts += _fill(
        [
            "an object in the {}",
            "a shape in the {}",
            "something in the {} of the image",
            "a thing at the {}",
            "the {} of the picture",
        ],
        POSITIONS,
    )
    texts += _fill(["a {} object", "a {} shape", "something {}"], SIZES)
    texts += _fill(["a {} object", "a {} shape", "a {} pattern", "a {} surface"], TEXTURES)
    short = {
        "plain": "a plain background",
        "water": "water",
        "grass": "grass",
        "sand": "sand",
        "sky": "a sky background",
    }
    texts += _fill(
        ["an object on a {} background", "a {} background", "a scene with {}", "an image of {}"],
        BACKGROUNDS,
    )
    texts += [f"a shape on {short[b]}" for b in BACKGROUNDS]
    texts += [
        "a lake",
        "the sea",
        "waves",
        "blue water",
        "a river",
        "an ocean",
        "rippling water",
        "a green field",
        "a lawn",
        "a meadow",
        "green grass",
        "a grassy field",
        "a beach",
        "a desert",
        "yellow sand",
        "dunes",
        "the sky",
        "clouds",
        "a blue sky",
        "an empty background",
        "a gray background",
        "a uniform background",
    ]
    # counts
    count_words = ["one", "two", "three", "four"]
    for i, n in enumerate(count_words):
        noun_s, noun_o = ("shape", "object") if i == 0 else ("shapes", "objects")
        texts += [f"{n} {noun_s}", f"{n} {noun_o}", f"an image with {n} {noun_o}"]
        texts += [f"{n} {noun_s} on {short[b]}" for b in BACKGROUNDS]
    texts += [
        "a single object",
        "a pair of shapes",
        "many shapes",
        "several objects",
        "an empty image",
        "no objects",
    ]
    # combinations
    texts += [f"a {c} {s}" for c in COLORS for s in SHAPES]
    texts += [f"a {t} {s}" for t in TEXTURES for s in SHAPES]
    texts += [f"a {s} in the {p}" for s in SHAPES for p in POSITIONS]
    texts += [f"a {c} object in the {p}" for c in COLORS for p in POSITIONS]
    texts += [f"a {z} {s}" for z in SIZES for s in SHAPES]
    texts += [f"a {z} {c} object" for z in SIZES for c in COLORS]
    texts += [f"a {c} {t} object" for c in COLORS for t in TEXTURES]
    texts += [f"a {s} on a {b} background" for s in SHAPES for b in BACKGROUNDS]
    texts += [f"a {c} object on {short[b]}" for c in COLORS for b in BACKGROUNDS]
    full = [
        f"a {z} {c} {t} {s} in the {p}"
        for z, c, t, s, p in itertools.product(SIZES, COLORS, TEXTURES, SHAPES, POSITIONS)
    ]
    texts += _sample(full, 120, rng)
    with_bg = [
        f"a {c} {s} in the {p} on a {b} background"
        for c, s, p, b in itertools.product(COLORS, SHAPES, POSITIONS, BACKGROUNDS)
    ]
    texts += _sample(with_bg, 80, rng)
    two = [
        f"two objects: a {c1} {s1} and a {c2} {s2}"
        for (c1, s1), (c2, s2) in itertools.permutations(itertools.product(COLORS, SHAPES), 2)
    ]
    texts += _sample(two, 40, rng)
    # distractors: things the shapes world never shows
    texts += [
        "a photo of a dog",
        "a photo of a cat",
        "a person smiling",
        "a city street at night",
        "a bowl of fruit",
        "a cup of coffee",
        "a car on a road",
        "a snowy mountain",
        "a forest",
        "a crowd of people",
        "a bicycle",
        "a house",
        "a tree",
        "a flower",
        "the letter A",
        "the number 7",
        "handwritten text",
        "a painting",
        "a cartoon",
        "a black and white photo",
        "a blurry photo",
        "a dark image",
        "a bright image",
        "a brown object",
        "a black object",
        "a white object",
        "a gray object",
        "a gold object",
        "a hexagon",
        "a heart",
        "an arrow",
        "a crescent",
        "a pentagon",
        "a rectangle",
        "a spiral",
        "a cube",
        "a sphere",
        "a wavy pattern",
        "a floral pattern",
        "a zigzag pattern",
        "a noisy image",
        "a sunset",
        "a night sky with stars",
        "a snowy background",
        "a brick wall",
        "a wooden floor",
        "a red brick background",
        "an indoor scene",
        "a happy scene",
        "a sad scene",
        "a drawing by a child",
        "a photo of a bird",
        "a boat on a lake",
        "a field of flowers",
        "a sandy beach with people",
        "a rainy day",
    ]
    return dedupe(_fix_articles(t) for t in texts)


POOLS = {"general": general_pool, "shapes": shapes_pool}
DESCRIPTIONS = {
    "general": "general image descriptions (colours, textures, patterns, shapes, counts, "
    "letters/numbers, objects, animals, people, scenes, places, styles, lighting, moods)",
    "shapes": "shapes-world descriptions (colour, shape, position, size, texture, background, "
    "count, combinations) plus distractors",
}


def render(name: str) -> str:
    texts = POOLS[name]()
    header = (
        f"# vision_lens text pool '{name}': {len(texts)} {DESCRIPTIONS[name]}. "
        "Generated by scripts/make_text_pools.py; do not edit by hand."
    )
    return header + "\n" + "\n".join(texts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check the committed files")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    stale = []
    for name in POOLS:
        text = render(name)
        path = args.out / f"{name}.txt"
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"{path}: {text.count(chr(10)) - 1} texts")
    if stale:
        print("out of date (run scripts/make_text_pools.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
