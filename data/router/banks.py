"""Filler banks for generate.py: topics, entities and short texts that the phrasing templates are filled with.

Written for this project. Broad on purpose: the gate learns what a *domain* looks like (any programming topic,
any fact question, any small talk), not a fixed list of requests.
"""

from __future__ import annotations


def split(text: str) -> list[str]:
    return [t.strip() for t in text.replace("\n", " ").split("|") if t.strip()]


# ------------------------------------------------------------------------------------------ pictures
THINGS = split("""a fox sleeping under a pine tree|a lighthouse on a cliff at dusk|an astronaut riding a bicycle on
the moon|a bowl of ramen with steam rising|a cozy reading nook with a cat|a castle floating in the clouds|two robots
playing chess|a koi pond in autumn|a vintage red tram in Lisbon|a hedgehog wearing a tiny hat|a mountain village at
sunrise|a jellyfish glowing in the deep sea|an old man fishing from a wooden pier|a city skyline in the rain|a dragon
made of autumn leaves|a sunflower field under a stormy sky|a treehouse with rope bridges|a snowy owl on a fence post|a
busy night market with lanterns|a whale swimming through the sky|a wizard's cluttered workshop|a lemon tree in a
terracotta pot|a sleepy panda eating bamboo|a steam train crossing a viaduct|a desert oasis with palm trees|a
greenhouse full of orchids|a knight and a tiny dragon having tea|a neon-lit alley in Tokyo|a herd of elephants at a
waterhole|a birthday cake with candles|a rocket lifting off at night|a pair of running shoes|a medieval market
square|a cat astronaut|an underwater city|a field of lavender in Provence|a tiger in the snow|a bookshop on a rainy
evening|a violin on a velvet chair|a family picnic in a park|a hummingbird drinking from a flower|a sailing ship in a
storm|a mushroom house in the forest|a polar bear on an ice floe|a bicycle leaning on a yellow wall|a cup of coffee
with latte art|a volcano erupting at night|a friendly monster under the bed|a garden gnome on a skateboard|a phoenix
rising from flames|a quiet beach with footprints in the sand|a robot dog in a meadow|a wolf howling at the moon|a
cottage covered in ivy|a giant tortoise with a garden on its shell|a snowman melting in spring|a hot air balloon over
a canyon|a frog playing a banjo|an owl wearing glasses|a futuristic train station|a basket of fresh bread|a row of
colourful houses by a canal|a penguin on a surfboard|a waterfall in a jungle|a campfire under the stars|a child
flying a red kite|a samurai in a bamboo forest|a chameleon on a branch|a cathedral interior with stained glass|a
racing car on a wet track|a sloth hanging from a tree|a spaceship landing in a wheat field|a raccoon raiding a picnic
basket|an octopus playing the drums|a foggy harbour at dawn|a tiny house on wheels|a hamster in a space suit|a
glowing crystal cave|a street musician in Paris|a golden retriever in a pile of leaves|a floating island with
waterfalls|a vintage typewriter on a desk|a fire-breathing chicken|a moonlit graveyard with friendly ghosts|a bee
landing on a daisy|a submarine exploring a coral reef|a steampunk airship|a ballerina made of glass|a bowl of
cherries on a marble table|a skateboarding grandma|an ice cream truck in the desert|a unicorn in a thunderstorm|a
giant robot in a rice field|a cat wearing a crown|a sunrise over rice terraces|a crowded subway car|a lone tree on a
hill|a dog surfing a wave|a bear fishing for salmon""")
STYLES = split("""watercolor|oil painting style|pixel art|anime style|photorealistic|a pencil sketch|low-poly 3D|
vaporwave colors|ukiyo-e woodblock style|children's book style|charcoal|comic book style|flat vector art|
isometric style|impressionist style|claymation look|neon synthwave|minimalist line art|stained glass style|
a 1970s poster look|gouache|cyberpunk style|art nouveau|a blueprint style|papercut art|cel shading|
sepia photograph look|chalk on a blackboard|crayon drawing|mosaic tiles""")
ASSETS = split("""a logo for my bike repair shop|an icon for a weather app|a banner for my gaming channel|a poster for a
summer jazz festival|a book cover for a mystery novel|a sticker of a happy cactus|a mascot for a robotics club|a
wedding invitation background|a tattoo design of a swallow|a desktop wallpaper with mountains|an album cover for a
lo-fi playlist|a t-shirt print of a wave|a birthday card for a five year old|a menu header for a taco truck|a
character portrait for my D&D ranger|a pattern of tiny strawberries for fabric|a profile picture of a cartoon cat|an
emoji of a tired potato|a thumbnail for a cooking video|a flyer for a bake sale|a coat of arms for my family|a
greeting card with a snowy village|a label for my homemade jam|a cover image for my podcast|a badge for a hiking
club|a storyboard frame of a chase scene|a holiday card with reindeer|a pin design of a sleepy moon|a concept sketch
of a sci-fi helmet|a board game box art""")

# ------------------------------------------------------------------------------------------ code
LANGS = split("python|javascript|typescript|rust|go|java|c|c++|c#|ruby|php|kotlin|swift|bash|sql|haskell|lua|scala|r|"
              "elixir|dart|julia|perl|zig")
TECH = split("""a flexbox navbar in css|a responsive grid layout|a github actions workflow for tests|a gitlab ci
pipeline|a kubernetes deployment yaml|a helm chart for a web app|a terraform module for an s3 bucket|an ansible
playbook that installs nginx|a systemd service file|a makefile for a c project|a cmake setup for a small c++ library|a
crontab entry that runs a backup nightly|a bash script with getopts|a powershell script that cleans temp folders|a
pandas merge of two dataframes|a vectorized numpy version of a loop|a matplotlib bar chart|a pytorch training loop|a
scikit-learn pipeline with scaling|an sql window function for running totals|a postgres index on two columns|a mongodb
aggregation pipeline|a redis cache in front of an api|a graphql schema for a blog|a fastapi endpoint with validation|an
express middleware for logging|a django model with a foreign key|a rails migration|a custom react hook|a vue component
with props|an angular service that calls an api|a next.js api route|a websocket client|a grpc service definition|a
jwt auth check|an oauth login flow|a regex for phone numbers|a jest unit test|a pytest fixture for a temp database|a
mock for an http call|a dockerfile for a node app|a docker compose file with postgres|an nginx reverse proxy config|an
apache rewrite rule|a git pre-commit hook|a git bisect session|a linked list in c|a rust enum with pattern matching|a
go worker pool with goroutines|a java stream pipeline|a kotlin coroutine|a swiftui list view|an android recyclerview
adapter|a unity c# script for player movement|a godot script for jumping|an arduino sketch that blinks an led|a
raspberry pi gpio script|a latex table|an excel vba macro|a jq filter|an awk one-liner|a sed substitution|a find
command with -exec|an ssh config with jump hosts|a prometheus alert rule|a csv parser|a json to yaml converter|a web
scraper with beautifulsoup|a selenium login test|a chrome extension manifest|a service worker for offline caching|a
webpack config|a vite config with aliases|a typescript interface for an api response|a python dataclass|a rust
trait|a c++ template function|a haskell typeclass instance|an elixir genserver|an sql stored procedure|a database
migration script|a spark job that counts words|a kafka consumer|an airflow dag|an aws lambda handler|a
cloudformation template|a bash loop over files|an asyncio task group|a java thread pool|a mutex around shared state
in c|a bloom filter|a min-heap|a hash map from scratch|deleting a node from a binary search tree|a topological sort|a
union-find structure|a sliding window maximum|a knapsack solution with dynamic programming|breadth-first search on a
grid|a debounce function|a react form with validation|a tailwind card component|an opencv script that finds
edges|a makefile target for tests|a git alias for a pretty log|a sqlite schema for a todo app|a rate limiter in
redis|a cli with argparse|a rust cli with clap|a go http server with middleware|a php login form|a laravel
controller|a spring boot rest controller|a .gitignore for python|a pyproject.toml for a package|a nix flake|a vim
config for python""")
CODE_ACTIONS = split("""write {tech}|help me write {tech}|can you give me {tech}?|I need {tech}|show me {tech}|how do I
set up {tech}?|generate {tech}|what's the cleanest way to write {tech}?|give me an example of {tech}|I'm stuck writing
{tech}|could you sketch out {tech}|how would you structure {tech}?|write {tech} in {lang}|{tech} — can you code
it?|review my approach to {tech}|what's wrong with my {tech}?|explain how {tech} works|debug {tech} for me|why does
my {tech} not work?|make {tech} faster""")
CODE_TASKS = split("""a function that checks whether a string is a palindrome|a script that downloads a web page and
counts the words|a function to merge two sorted lists|a class for a bank account with deposit and withdraw|a function
that flattens a nested list|a parser for key=value config files|a CLI that renames photos by their date|a function
that returns the n-th prime|a thread-safe counter|a function that validates an IBAN|a retry decorator with backoff|a
binary tree with insert and search|a function that converts roman numerals to integers|a rate limiter using a token
bucket|a script that backs up a folder to a zip file|a function that finds duplicate files by hash|a simple HTTP
server that serves a folder|a trie for autocomplete|a function to compute the levenshtein distance|a queue using two
stacks|a function to parse ISO 8601 dates|a matrix multiplication routine|a websocket echo server|a function that
chunks a list into pieces of size n|a markdown to html converter for headings|a dijkstra shortest path function|a
function that deep-merges two dictionaries|an event emitter class|a function to detect a cycle in a linked list|a
function that shuffles a deck of cards|a word frequency counter|a function that formats bytes as KB/MB/GB|a snake game
in the terminal|a function that checks balanced brackets|a countdown timer|a function to compute a moving average|a
url shortener|a script that resizes every image in a folder|a caesar cipher""")
CODE_QUESTIONS = split("""what's the difference between == and is in python|how do closures work in javascript|when
should I use a mutex instead of a channel in go|why does the borrow checker complain when I return a reference to a
local|how do I read a file line by line in java|what is a race condition and how do I avoid one|how do I write a left
join in sql|why is my recursive function hitting maximum recursion depth|how does async work in rust|what's the best
way to handle errors in go|how do I make an http request in node|what's a virtual environment in python and why use
one|how do I squash commits in git|what is dependency injection|how do generics work in typescript|why does 0.1 + 0.2
not equal 0.3 in my code|how do I profile a slow python function|what does 'static mean in rust|how do I sort a dict
by value|what's the difference between let, const and var|how do I deploy a docker image to a server|how do I write a
unit test that mocks a database|what does SELECT DISTINCT do|how do pointers to pointers work in c|what is
memoization, show me in code|how do I revert a pushed commit|what's the difference between a list and a tuple|why is
my css not applying to the button|how do I center text vertically in css|how do I read environment variables in
node|what's the difference between a docker image and a container|how do I free memory I allocated with malloc|what's
a segfault and how do I track it down|how do I make a python package installable with pip|how do I parse json in
bash|why does my useEffect run twice in react|what does the volatile keyword do in java|how do I merge two branches
without a merge commit|how do I paginate results in sql|what's tail recursion|how do I handle a promise rejection|what
is the GIL in python|how do I write a makefile rule for every .c file|how does garbage collection work in go|how do I
cache results of a slow function|what's the difference between process.nextTick and setImmediate""")
ERRORS = split("""KeyError: 'user_id'|NullPointerException at line 42|undefined is not a function|segmentation fault
(core dumped)|ModuleNotFoundError: No module named 'requests'|error[E0382]: borrow of moved value|fatal: refusing to
merge unrelated histories|ERROR 1064 (42000): You have an error in your SQL syntax|IndexError: list index out of
range|cannot find symbol|Uncaught SyntaxError: Unexpected token '<'|panic: runtime error: index out of range|
ZeroDivisionError: division by zero|blocked by CORS policy: No 'Access-Control-Allow-Origin' header|Permission denied
(publickey)|java.lang.OutOfMemoryError: Java heap space|TypeError: unsupported operand type(s) for +: 'int' and
'str'|npm ERR! code ERESOLVE|RecursionError: maximum recursion depth exceeded|Bind for 0.0.0.0:5432 failed: port is
already allocated|ImagePullBackOff|error: failed to push some refs|Unhandled Promise Rejection|AttributeError:
'NoneType' object has no attribute 'split'|undefined reference to `main'|ValueError: too many values to unpack|
ConnectionRefusedError: [Errno 111]|warning: implicit declaration of function|SSL: CERTIFICATE_VERIFY_FAILED|
Cannot use import statement outside a module|expected ';' before '}' token|OOMKilled|terraform: Error acquiring the
state lock|ReferenceError: document is not defined""")
SNIPPETS = ["for i in range(10) print(i)", "SELECT name FROM users WHERE age > 30 GROUP BY city",
            "const x = arr.map(a => { a * 2 })", "if (x = 5) { console.log('five') }",
            "def avg(xs): return sum(xs) / len(xs)", "int* p; *p = 3;",
            "let v = vec![1,2,3]; let w = v; println!(\"{:?}\", v);", "while True: data = sock.recv(1024)",
            "String s = null; s.length();", "df[df['age'] > 30]['name'] = 'x'", "x = [[0]*3]*3; x[0][0] = 1",
            "async function f() { return fetch(url).json() }", "for (int i = 0; i <= n; i++) sum += a[i];",
            "git push origin master --force", "UPDATE users SET active = 0", "def f(items=[]): items.append(1)",
            "echo $PATH | grep bin", "fmt.Println(len(m[\"a\"]))", "arr.sort()[0]", "open('f.txt').read()"]

# ------------------------------------------------------------------------------------------ knowledge
PEOPLE = split("""Marie Curie|Ada Lovelace|Genghis Khan|Frida Kahlo|Nikola Tesla|Cleopatra|Leonardo da Vinci|Mahatma
Gandhi|Isaac Newton|Charles Darwin|Joan of Arc|Napoleon|Rosalind Franklin|Confucius|Simón Bolívar|Queen
Victoria|Galileo|Harriet Tubman|Alexander the Great|Mansa Musa|Florence Nightingale|Albert Einstein|Catherine the
Great|Johannes Gutenberg|Martin Luther King Jr.|Amelia Earhart|Sigmund Freud|Julius Caesar|Hypatia|Alan Turing|Karl
Marx|Wolfgang Amadeus Mozart|Shakespeare|Jane Austen|Socrates|Emmeline Pankhurst|Ibn Battuta|Pablo Picasso|Winston
Churchill|Marco Polo""")
PLACES = split("""Peru|Kenya|Norway|Vietnam|Argentina|Egypt|Australia|Canada|Mongolia|Iceland|Morocco|Chile|Finland|
Indonesia|Ghana|Portugal|Nepal|Cuba|Poland|Thailand|New Zealand|Ethiopia|Colombia|Turkey|Ireland""")
LANDMARKS = split("""the Great Pyramid of Giza|Machu Picchu|the Golden Gate Bridge|Angkor Wat|Stonehenge|the Taj
Mahal|Mount Kilimanjaro|the Grand Canyon|the Colosseum|Uluru|the Acropolis|Petra|Chichen Itza|the Burj Khalifa|the
Statue of Liberty|Victoria Falls|the Dead Sea|Lake Baikal|the Amazon river|Mount Fuji""")
EVENTS = split("""the fall of the Roman Empire|the French Revolution|the first world war|the moon landing|the
Black Death|the Industrial Revolution|the fall of Constantinople|the American Revolution|the Cuban missile crisis|the
invention of the printing press|the Meiji Restoration|the collapse of the Soviet Union|the Reformation|the Great
Depression|the signing of the Magna Carta|the partition of India|the Spanish flu pandemic|the Chernobyl disaster|the
discovery of penicillin|the abolition of slavery in Britain""")
CONCEPTS = split("""photosynthesis|plate tectonics|the greenhouse effect|natural selection|inflation|black holes|
the immune system|continental drift|the water cycle|nuclear fusion|supply and demand|the placebo effect|entropy|
mitosis|the speed of light|antibiotics|dark matter|the ozone layer|the electoral college|gravity|evolution|
the carbon cycle|insulin|a solar eclipse|osmosis|democracy|the Doppler effect|tides|earthquakes|cholesterol|
the stock market|a vaccine|radioactivity|the Big Bang|DNA replication|the circulatory system|magnetism|
the Renaissance|feudalism|the scientific method""")
ACRONYMS = split("NATO|UNESCO|laser|scuba|radar|GDP|FIFA|OPEC|ATP|MRI|UV|the WHO|NASA|UNICEF|BCE|AD|RSVP|SOS|IQ|HIV")
FACT_QUESTIONS = split("""how many bones does a cat have|which ocean is the deepest|what's the largest moon of
saturn|how long does light from the sun take to reach earth|what is the most spoken language in the world|which
country has the most islands|what's the oldest known tree|how many teeth does an adult have|what metal is liquid at
room temperature|which bird lays the largest eggs|how deep is the mariana trench|what's the hottest planet|which
organ produces insulin|how many chambers does the heart have|who was the first emperor of china|what's the
national sport of canada|which blood type is the universal donor|how many symphonies did beethoven write|what's the
most abundant gas in the atmosphere|which river flows through baghdad|what's the largest lake in africa|when was the
first olympics|what is the rarest blood type|how many stars are on the us flag|who built the first airplane|which
element is a diamond made of|what's the capital of new zealand|how many legs does a spider have|what is the driest
place on earth|what's the longest bone in the human body|what is the largest country by area|who wrote war and
peace|which planet has the great red spot|how old is the earth|what language has the most words|what is the boiling
point of water in kelvin|who discovered america first|which animal has the longest lifespan|what instrument has 47
strings|what's the smallest bone in the body""")

# ------------------------------------------------------------------------------------------ reasoning
GENRES = split("""an email|a short poem|a haiku|a limerick|a short story|a speech|a toast|a short bio|an ad|a product
description|a short essay|a blog post|a tweet|a slogan|a review|a cover letter|an invitation|an apology note|a thank
you card message|a lesson plan|a newsletter intro|a press release|a fairy tale|a dialogue between two characters|
song lyrics|a sonnet|a riddle|a motivational quote|a eulogy|a recipe intro|a podcast intro script|a job posting|an
out-of-office reply|a complaint letter|a resignation letter|a reference letter|a wedding vow|a birthday message""")
TOPICS = split("""my dog's first birthday|a rainy monday|moving to a new city|my grandmother's garden|the first day
of school|a lost umbrella|learning to ride a bike|a team that just shipped a product|a coffee shop that closes
forever|friendship|the ocean at night|a robot who wants to be human|a volcano that is afraid of heights|our company
picnic|a late train|climate change|a new electric scooter|a handmade candle shop|a running club|my sister's
graduation|a vegan bakery|a city library reopening|an old lighthouse keeper|a cat who runs a bookstore|time
travel|the last day of summer|a broken washing machine|a neighbourhood cleanup|a chess tournament|spring
cleaning|a noisy neighbour|the joy of cooking|a failed soufflé|a marathon finish|a moon colony""")
LISTS = split("""a packing list for a beach weekend|a shopping list for a week of dinners|a checklist for moving
house|a to-do list for launching a website|an agenda for a team retro|a list of questions to ask a landlord|a
checklist before a long drive|a list of icebreakers for a workshop|a morning routine checklist|a list of gift ideas
for a ten year old|a reading schedule for a 600 page book|a checklist for hosting a dinner party|a list of things to
do on a rainy day|a study checklist for a driving test|a list of pros and cons of getting a dog""")
DECISIONS = split("""take the bus or cycle to work|learn piano or guitar first|rent a car or use trains for a trip
around scotland|study medicine or engineering|buy a laptop now or wait for the sales|move in with my partner now or
next year|hire a junior or a senior developer|paint the living room grey or green|repair my old car or buy a used
one|do a masters degree or start working|invest in index funds or pay off my student loan|get a cat or a dog""")
LOGIC = split("""if some cats are black and all black things absorb heat, do some cats absorb heat?|what comes next:
2, 6, 12, 20, 30, ?|a farmer has 17 sheep and all but 9 run away. how many are left?|if it takes 5 machines 5 minutes
to make 5 widgets, how long for 100 machines to make 100 widgets?|is this argument valid: all birds fly, penguins are
birds, so penguins fly|three boxes are labelled wrong: apples, oranges, mixed. how do I fix the labels with one
pick?|what's the probability of getting at least one six in four rolls of a die?|solve: 2x + 3 = 17|simplify (3x^2
- 12) / (x - 2)|how many handshakes happen if 10 people all shake hands once?|which is bigger, 2^10 or 10^3?|what's
the derivative of x^3 sin x|integrate 2x from 0 to 3|if I double a recipe that needs 3/4 cup of sugar how much do I
need?|a shirt costs 40 after a 20% discount. what was the original price?|find the next prime after 89|is 1001
divisible by 7?|tom is taller than ann, ann is taller than bo. who is shortest?|if today is wednesday, what day is it
in 100 days?|I'm thinking of a number: double it and add 4 and you get 30. what is it?|a clock shows 3:15. what's the
angle between the hands?|you have a 3 litre and a 5 litre jug. how do you measure 4 litres?|if all roses are flowers
and some flowers fade quickly, must some roses fade quickly?|how many squares are on a chess board, counting all
sizes?|two trains 300 km apart head toward each other at 70 and 80 km/h. when do they meet?|what's wrong with this
reasoning: it rained after I washed my car, so washing cars causes rain|a snail climbs 3 m a day and slips 2 m each
night. how long to get out of a 10 m well?|which weighs more: a pound of bricks or a pound of feathers?|if 3 pencils
cost 1.20, how much do 10 cost?|what's the next letter: O, T, T, F, F, S, S, ?""")
UNITS = [("miles", "kilometres"), ("kilograms", "pounds"), ("litres", "gallons"), ("feet", "metres"),
         ("celsius", "fahrenheit"), ("ounces", "grams"), ("hours", "seconds"), ("cups", "millilitres")]
ANALYSES = split("""why do people procrastinate even when they know it hurts them|why is it so hard to keep new year's
resolutions|what are the arguments for and against a four-day work week|why do some startups fail even with good
products|what might happen to a town if its main factory closes|why do people trust online reviews|what are the
trade-offs of working at a big company versus a startup|how could a small library attract more teenagers|why do
traffic jams happen without any accident|what are the risks of lending money to a friend|how would you convince a
sceptical boss to allow remote work|what makes a good teacher""")
SPEECH_TEXT = split("""The store will close early on Friday for inventory.|Please remember to water the plants while
I'm away.|Welcome aboard, we hope you enjoy the flight.|Happy anniversary, my love. Here's to many more years.|Your
appointment is confirmed for Monday at three.|The library is a quiet zone, please keep conversations short.|Thank
you for your patience, someone will be with you shortly.|Dinner is at seven, don't be late!|Turn left at the bakery,
then it's the second house on the right.|Congratulations on your graduation!|Reminder: the bins go out on Tuesday
night.|Once there was a tiny snail who dreamed of racing.|Breathe in slowly, hold for four seconds, and breathe
out.|Attention passengers, the train to Leeds departs from platform four.|I am sorry I missed your call, I'll ring
you back soon.|Step one: preheat the oven to 180 degrees.|The quarterly results exceeded our expectations in every
region.|Please leave your shoes at the door and help yourself to tea.|The museum opens at nine and closes at
five.|Good luck on your first day, you're going to do great.|Chapter one. The house on the hill had been empty for
years.|Ladies and gentlemen, please take your seats, the show is about to begin.|The password for the guest wifi is
on the fridge.|Our next speaker has travelled all the way from Nairobi.""")
WORDS = split("croissant|Tchaikovsky|Llanfairpwllgwyngyll|gnocchi|Xochimilco|epitome|Reykjavik|hyperbole|Siobhan|"
              "schedule|Saoirse|Dvořák|pho|Eyjafjallajökull|chipotle|Wednesday|anemone|Joaquin|colonel|Goethe")

# ------------------------------------------------------------------------------------------ persona
SMALLTALK = split("""hi there|hello!|hey, how are you?|good evening|how's it going?|what's new with you?|I'm so tired
today|thank you, that was really helpful|you're awesome|good night!|do you have feelings?|what's your favourite
movie?|I'm bored, entertain me|tell me something funny|I had a terrible day at work|can you cheer me up?|who made
you?|are you smarter than me?|I love chatting with you|what do you dream about?|haha nice one|ok thanks bye|that's so
cool|let's just talk|how old are you?|do you like music?|I'm back!|sorry, my bad|guess what happened today|you made my
day|what should we talk about?|I'm feeling great today|tell me a fun fact about yourself|are you there?|yo|sup|
morning!|I just finished my exams!|I miss my dog|what's your personality like?|do you get lonely?|I can't sleep|give
me a compliment|tell me a joke about cats|be my hype man for a second|you're funny|what's up buddy|I need someone to
talk to|let's play a word game|whats ur name|I'm celebrating my birthday today!|cheers mate|nice to meet you|I got
promoted!|my plants are growing so well|it's raining again, ugh|do you prefer cats or dogs?|you're the best
assistant|long time no see|what are you up to?|do you ever sleep?|what makes you happy?|say something nice|you're
kind of weird lol|I'm hungry|guess who's back|what's your favourite food?|tell me a pun|are we friends?|that made me
laugh|meh|ok|cool cool|wow|goodbye|see you later|hey you|can you keep me company?|I'm having a rough week|I just
adopted a kitten!|today was amazing|do you like your job?|knock knock""")
FEELINGS = split("nervous|excited|stressed|sad|happy|anxious|proud|lonely|overwhelmed|bored|grateful|homesick|"
                 "frustrated|hopeful|scared")
EVENTS_PERSONAL = split("""my driving test tomorrow|the new job|my presentation on friday|moving abroad|my first
date in years|the holidays|my cat being sick|finishing my thesis|my kid starting school|the weekend|my sister's
wedding|the results coming out|my birthday|my trip next week""")
ROLES_PLAY = split("""a pirate|a grumpy cat|a medieval knight|Sherlock Holmes|a cheerful robot|a sports commentator|my
supportive aunt|a cowboy|a wise old tree|a game show host|a noir detective|a shakespearean actor|a sleepy
dragon|a surfer dude|a strict but kind coach""")

# ------------------------------------------------------------------------------------------ media words
ANIMALS = split("dog|cat|bird|butterfly|snake|spider|fish|mushroom|tree|flower|cactus|beetle|lizard|frog|horse|"
                "shell|leaf|orchid|moth|rock")
OBJECTS = split("car|plane|shoe|guitar|camera|chair|building|bridge|lamp|watch|bike|sofa|cake|jacket|boat|phone")
MEETINGS = split("""meeting|lecture|podcast episode|interview|all-hands|webinar|seminar|board meeting|conference
talk|focus group|town hall|court hearing|sermon|panel discussion|sales call|workshop|city council session|class""")
DURATIONS = split("two-hour|90 minute|hour-long|three hour|45-minute|2h|1.5 hour|full day|70 minute|long|"
                  "two and a half hour|50 minute")
CLIPS = split("""voice memo|voice message|clip|short recording|voicemail|audio snippet|note I recorded|message from my
sister|sound bite|quick recording|whatsapp voice note|answering machine message""")
LANGS_NAT = split("french|spanish|german|italian|portuguese|japanese|dutch|polish|turkish|korean|arabic|greek")

# ------------------------------------------------------------------------------------------ more domains
ARTWORKS = split("""the Mona Lisa|The Night Watch|Guernica|The Birth of Venus|The Persistence of Memory|The
Scream|Girl with a Pearl Earring|The Last Supper|Water Lilies|The Thinker|the statue of David|The Kiss|American
Gothic|The Great Wave off Kanagawa|Las Meninas""")
BOOKS = split("""Don Quixote|Pride and Prejudice|War and Peace|Things Fall Apart|The Tale of Genji|Moby-Dick|
Frankenstein|Beloved|The Little Prince|Crime and Punishment|Middlemarch|The Divine Comedy|The Odyssey|Nineteen
Eighty-Four|The Great Gatsby|Midnight's Children""")
WORKS_MUSIC = split("""the Moonlight Sonata|The Magic Flute|the Brandenburg Concertos|Bolero|The Rite of Spring|
Clair de Lune|the Ode to Joy|Swan Lake|Rhapsody in Blue|The Blue Danube""")
FILMS = split("""Casablanca|Seven Samurai|Metropolis|Psycho|Bicycle Thieves|2001: A Space Odyssey|Citizen Kane|
Spirited Away|The Godfather|Parasite""")
ELEMENTS = split("gold|silver|iron|lead|sodium|potassium|tin|mercury|copper|tungsten|helium|oxygen|carbon|neon|"
                 "uranium|zinc")
SHELL_TASKS = split("""find every file over 1GB in my home folder|count the lines in all .py files|kill the process
listening on port 8080|show disk usage per folder sorted by size|replace foo with bar in every .txt file|download a
file and resume if it breaks|list the ten biggest files in a directory|watch a log file for errors|compress a folder
into a tar.gz|check which process is using the most memory|rename every .jpeg file to .jpg|delete files older than 30
days|copy a folder to a server over ssh|show my public ip|list open network ports|print the 5th column of a csv|
find duplicate lines in a file|tail the last 100 lines of a log""")
GIT_TASKS = split("""undo my last commit but keep the changes|delete a remote branch|see who changed a line|stash
only one file|move my last three commits to a new branch|fix the message of the last commit|remove a file from
the repo but keep it locally|cherry-pick a commit from another branch|resolve a merge conflict|show the diff of a
single file between two branches|squash the last four commits|undo a git add""")
SQL_TASKS = split("""returns the ten most recent orders per customer|finds customers who never ordered|sums revenue
per month for 2023|deletes duplicate rows but keeps one|joins users and orders and counts orders per user|finds the
second highest salary|lists products that are out of stock|computes a 7-day rolling average of sales|shows the
average order value by country|finds employees who earn more than their manager""")
CRON_TASKS = split("""every day at midnight|every monday at 9am|every 15 minutes|the first day of each month at
6am|weekdays at 18:30|every sunday at 2am|twice a day at 8 and 20|every hour on the half hour""")
REGEX_TASKS = split("""an email address|a us phone number|a date like 2024-01-31|an ipv4 address|a hex colour code|
a url|a postcode|a time in 24h format|a strong password|a semantic version like 1.2.3""")
NONSENSE = split("blorp|zindle|quark|frobble|snark|mimsy|tove|wug|glip|dax|flurb|krill")
LIST_PAYLOADS = split("""eggs, milk, bread and two lemons|call the plumber, pay rent, book the dentist|pack
chargers, passport, sunscreen|meet Ana at 3, gym at 6, dinner at 8|flour 500g, sugar 200g, three eggs""")
VISION_ATTRS = split("""is the {animal} young or old?|what colour is the {obj}?|is the {obj} new or used?|what's the
mood of this photo?|what is the {animal} doing?|is this meme funny? explain it|rate this photo out of ten|is the
{obj} in good condition?|how big is the {obj} compared to the person?|does this {obj} look expensive?|is the fruit
ripe?|is the weather good in this shot?|is this room tidy?|what's unusual about this {obj}?|are the people happy
in this picture?|does the lighting work in this photo?""")
