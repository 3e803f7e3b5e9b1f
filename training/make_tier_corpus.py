# ruff: noqa: E501  (hand-written prompt templates read better unwrapped)
"""Writes tierwise's tier-labelled training corpus (src/tierwise/data/tier_corpus.jsonl).

The lesson's taxonomy, one block per category: hand-written request templates with
hand-written slot values across many domains, combined with a fixed seed so the file is
reproducible. Run: .venv/bin/python training/make_tier_corpus.py

The held-out prompts used to evaluate the taxonomy (src/tierwise/data/tier_holdout.jsonl) are
written separately by hand, with different phrasings, and are never read by training.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "tierwise" / "data" / "tier_corpus.jsonl"

PEOPLE = ["Ann Lee", "Marco Rossi", "Priya Natarajan", "Tom Becker", "Yuki Sato", "Olu Adeyemi"]
CITIES = ["Lisbon", "Denver", "Osaka", "Nairobi", "Leeds", "Montreal", "Pune"]
PRODUCTS = ["wireless earbuds", "standing desk", "espresso machine", "running shoes", "VPN plan"]
LANGS = ["French", "Spanish", "German", "Italian", "Japanese", "Portuguese", "Dutch", "Korean"]
PHRASES = [
    "Where is the train station?",
    "Thank you for your patience.",
    "The meeting is moved to Thursday.",
    "Please keep the door closed.",
    "Our office opens at nine.",
    "I would like a table for two.",
    "Your order has shipped.",
]
PLANGS = ["Python", "TypeScript", "Go", "Java", "Rust", "C#", "Ruby", "Kotlin", "SQL"]
DOMAINS = [
    "payments",
    "healthcare records",
    "ride sharing",
    "online education",
    "logistics",
    "video streaming",
    "banking",
    "e-commerce",
    "IoT telemetry",
    "multiplayer gaming",
]
TOPICS = [
    "remote work",
    "composting at home",
    "learning a second language",
    "our new mobile app",
    "saving for retirement",
    "the benefits of code review",
    "spring hiking safety",
    "a neighbourhood cleanup day",
]

SIMPLE: dict[str, list[str]] = {
    "formatting": [
        "Format this customer record as JSON: name {person}, city {city}, age {n}.",
        "Turn this into a markdown table: {person} - {city} - {n}; {person2} - {city2} - {m}.",
        "Capitalize every word in this title: 'a guide to {topic}'.",
        "Reformat these dates as YYYY-MM-DD: March 3 2024, 12/07/2023, 1st of May 2022.",
        "Convert this list to bullet points: apples, pears, plums, {product}.",
        "Make this address one line: {person}\n12 High Street\n{city}",
        "Please convert the following to lowercase: {PHRASE}",
        "Put these names in alphabetical order: {person}, {person2}, Zoe Hart, Adam Ng.",
        "Format as a numbered list: buy milk; call {person}; book flight to {city}.",
        "Can you tidy up the spacing and punctuation in this sentence: "
        "'hello ,world  .how are you'",
    ],
    "extraction": [
        "Extract all email addresses from this text: contact {email} or sales@example.org.",
        "Pull out the dates mentioned here: we met on 3 May, shipped on 9 June, paid 1 July.",
        "From this invoice text, extract the total amount: 'Subtotal $120, tax $9.60, total "
        "$129.60'.",
        "List the names of people mentioned: '{person} met {person2} in {city}.'",
        "Extract the phone number from: 'Call us at +1 555 0142 between 9 and 5.'",
        "Find all the URLs in this paragraph: see https://example.com and http://test.org/a.",
        "What is the order number in this message? 'Hi, my order #A{n}{m} never arrived.'",
        "Get the city and country out of this address: '4 Rue Cler, Paris, France'.",
        "Extract the product name and price: 'The {product} is on sale for ${n}.99 today.'",
        "Pick out every hashtag from this tweet: 'Loving {city} #travel #food #sunset'",
    ],
    "classification": [
        "Classify the sentiment of this review as positive, negative or neutral: 'The {product} "
        "broke after two days.'",
        "Is this email spam? 'You have won a free cruise, click here to claim.'",
        "Categorize this support ticket as billing, technical or account: 'I was charged twice "
        "this month.'",
        "Label each of these as fruit or vegetable: carrot, mango, leek, kiwi.",
        "Which department should handle this: 'My package to {city} is late'?",
        "Tag this headline with one topic (sports, politics, tech, business): 'Chipmaker shares "
        "jump 8% on earnings'.",
        "Is the following sentence a question or a statement? '{PHRASE}'",
        "Classify this customer message by urgency (low, medium, high): 'Site is down for all "
        "users.'",
        "Sentiment of: 'Honestly the best {product} I have owned.'",
        "Is this review about delivery, quality or price? 'Arrived a week late, box crushed.'",
    ],
    "simple q&a": [
        "What is the capital of {country}?",
        "How many days are in a leap year?",
        "Who wrote 'Pride and Prejudice'?",
        "What does HTTP stand for?",
        "Define the word 'ephemeral'.",
        "What is the boiling point of water in Fahrenheit?",
        "When did the Berlin Wall fall?",
        "What's a synonym for 'happy'?",
        "Which planet is closest to the sun?",
        "How many centimetres are in an inch?",
        "What time zone is {city} in?",
        "What is the plural of 'cactus'?",
    ],
    "data transformation": [
        "Convert this CSV to JSON:\nname,age\n{person},{n}\n{person2},{m}",
        "Parse this query string into key-value pairs: a=1&b={n}&city={city}",
        'Turn this JSON into YAML: {{"name": "{person}", "age": {n}}}',
        'Flatten this nested JSON: {{"user": {{"name": "{person}", "city": "{city}"}}}}',
        "Convert these temperatures from Celsius to Fahrenheit: 0, 25, 100.",
        "Change this XML to JSON: <user><name>{person}</name><age>{n}</age></user>",
        "Sort these numbers ascending: {n}, 3, {m}, 17, 8.",
        "Convert 5 kilometres to miles.",
        "Turn these key: value lines into a JSON object:\ncolor: red\nsize: {n}\nstock: yes",
        "Convert this table row to CSV: | {person} | {city} | {n} |",
    ],
    "translation": [
        "Translate '{PHRASE}' into {lang}.",
        "How do you say '{PHRASE}' in {lang}?",
        "Translate this sentence to English: 'Je voudrais un café, s'il vous plaît.'",
        "Please translate to {lang}: {PHRASE}",
        "What is 'good night' in {lang}?",
        "Translate the word 'library' into {lang}.",
        "Give me the {lang} for: '{PHRASE}'",
        "Translate into {lang}, keeping it formal: '{PHRASE}'",
    ],
}

STANDARD: dict[str, list[str]] = {
    "code generation": [
        "Write a {plang} function that merges two sorted lists into one sorted list.",
        "Implement a {plang} class for a simple LRU cache with get and put.",
        "Write a REST endpoint in {plang} that returns a user by id from a database.",
        "Create a {plang} script that reads a CSV file and prints the average of a column.",
        "Write unit tests for a function that validates email addresses in {plang}.",
        "Write a SQL query that returns the top 5 customers by total order value.",
        "Generate a {plang} function to check whether a string is a palindrome.",
        "Write a regex that matches UK postcodes and explain each part briefly.",
        "Write a React component that shows a paginated list of {domain} orders.",
        "Implement binary search in {plang} with tests for edge cases.",
        "Refactor this {plang} function to remove the duplicated code:\n```\ndef a(x):\n"
        "    if x > 0:\n        return x * 2\n    else:\n        return x * 2 + 1\n```",
        "Write a bash script that backs up a directory to a timestamped tar file.",
        "Create a {plang} helper that retries an HTTP request three times with a delay.",
        "Write a function that parses ISO dates and returns the weekday, in {plang}.",
    ],
    "summarization": [
        "Summarize this article in three bullet points: {LONG}",
        "Give me a short summary of these meeting notes: {LONG}",
        "TL;DR this for me: {LONG}",
        "Summarise the key points of this customer feedback: {LONG}",
        "Condense this report into one paragraph for executives: {LONG}",
        "What are the main takeaways from this text? {LONG}",
    ],
    "bug fixing": [
        "Fix this bug: TypeError: 'NoneType' object is not subscriptable on line {n} of my "
        "{plang} script.",
        "My {plang} code throws IndexError: list index out of range when the list is empty. "
        "How do I fix it?",
        "Why does this fail with KeyError: 'id'?\n```\nuser = data['user']\nprint(user['id'])\n```",
        "Getting 'undefined is not a function' in my JavaScript when calling map on the API "
        "response. Fix please.",
        "This SQL errors with 'column \"total\" does not exist': SELECT total FROM orders "
        "GROUP BY customer_id;",
        "My {plang} program crashes with a null pointer exception when the config file is "
        "missing. Help me fix it.",
        "Debug this: the loop never ends.\n```\ni = 0\nwhile i < 10:\n    print(i)\n```",
        "npm install fails with ERESOLVE unable to resolve dependency tree. How do I fix this?",
        "Fix the off-by-one error in this function that should sum 1..n: "
        "`def s(n): return sum(range(n))`",
        "I get 'permission denied' when my Docker container writes to /data. What's wrong?",
    ],
    "content creation": [
        "Write a blog post about {topic} for our company newsletter.",
        "Draft a friendly email to customers announcing our new {product}.",
        "Write a product description for a {product}, about 100 words.",
        "Compose a short poem about {city} in the rain.",
        "Write a cover letter for a junior data analyst position.",
        "Draft a LinkedIn post celebrating our team's launch of a {domain} feature.",
        "Write a short story for kids about a robot who learns to garden.",
        "Create three catchy taglines for a {product} ad campaign.",
        "Write a speech for a retirement party for {person}.",
        "Explain how HTTPS works to a non-technical audience in a short article.",
        "Write an FAQ section for a {domain} app's help page.",
    ],
}

COMPLEX: dict[str, list[str]] = {
    "architecture": [
        "Design a distributed, fault-tolerant architecture for a {domain} platform that must "
        "handle 50,000 requests per second across three regions.",
        "Review this architecture for race conditions and consistency issues: three services "
        "share one PostgreSQL database and an event bus fans out every write.",
        "We are splitting our {domain} monolith into microservices. Propose service boundaries, "
        "data ownership, and a migration plan with rollback at each step.",
        "Evaluate event sourcing versus a traditional CRUD design for our {domain} system, "
        "considering consistency, replay, schema evolution and operational cost.",
        "Design the data model and sharding strategy for a multi-tenant {domain} database that "
        "will grow to 10 TB, with hot tenants and strict isolation.",
        "How should we guarantee exactly-once processing in a Kafka-based {domain} pipeline "
        "that writes to both a database and a search index?",
        "Propose a multi-region active-active design for {domain} and explain how conflicts are "
        "resolved and what consistency users see.",
        "Critique this system design: a cache in front of every service, a shared Redis for "
        "locks, and retries with no idempotency keys.",
    ],
    "security": [
        "Perform a security audit of this OAuth 2.0 flow for our {domain} app and list the "
        "vulnerabilities with their severity.",
        "Audit this login handler for security vulnerabilities: it builds the SQL query by "
        "string concatenation and compares password hashes with ==.",
        "Threat-model our {domain} API: attackers, assets, entry points, and mitigations "
        "ranked by risk.",
        "Review this JWT implementation for exploitable weaknesses: tokens are signed with HS256 "
        "using a key stored in the frontend bundle.",
        "Analyse this file-upload endpoint for vulnerabilities such as path traversal, XSS and "
        "remote code execution, and propose fixes.",
        "Is our key rotation and encryption-at-rest scheme for {domain} data sound? Identify "
        "attack paths an insider could use.",
        "Find the security holes in this session management design: session ids in URLs, no "
        "expiry, and CSRF tokens reused across users.",
    ],
    "novel algorithm": [
        "Design a novel algorithm to schedule {domain} jobs on heterogeneous machines that "
        "minimises tail latency, and prove its approximation bound.",
        "Prove that the greedy algorithm is optimal for this interval scheduling variant, or "
        "give a counterexample.",
        "Invent a data structure that supports insert, delete and median in O(log n) with O(1) "
        "amortised merge, and analyse its complexity rigorously.",
        "Devise an algorithm for deduplicating near-identical documents at billion scale with "
        "bounded memory, and derive its error rate.",
        "Is this problem NP-hard? Give a reduction or a polynomial algorithm: choose k {domain} "
        "warehouses to minimise the maximum delivery time.",
        "Design a new consensus-free protocol for counting unique visitors across data centres "
        "and prove its convergence.",
    ],
    "multi-step reasoning": [
        "Here are our Q1 to Q4 metrics for {domain}, the churn data and the pricing changes. "
        "Reason step by step about what caused the revenue drop and what to do next. {LONG}",
        "Across these five incident reports, find the common root cause and the chain of "
        "events that links them. {LONG}",
        "Compare three strategies for entering the {domain} market in {city}, weigh the "
        "trade-offs, and recommend one with the implications for hiring and cash flow.",
        "Work through the implications of moving our {domain} platform from a monthly to a "
        "usage-based pricing model: revenue, engineering, support and legal.",
        "Given the constraints below, plan a six-month migration of 200 services to a new "
        "cloud provider, sequencing the risky steps and the dependencies. {LONG}",
    ],
    "maximum accuracy": [
        "This is for a production outage postmortem and must be exactly correct: reconstruct "
        "the timeline from these logs and identify the trigger. {LONG}",
        "Review this contract clause for legal risk in a {domain} acquisition and state every "
        "obligation it creates; accuracy is critical.",
        "Check these medical dosage calculations for a paediatric ward; any error is "
        "unacceptable: 15 mg/kg every 6 hours for a {n} kg child.",
        "Verify the compliance of our {domain} data retention policy with GDPR and HIPAA, "
        "article by article, with maximum accuracy.",
        "Double-check this financial model's formulas for errors before the board meeting; it "
        "must be exactly right.",
    ],
    "research synthesis": [
        "Synthesize the research literature on {topic} and summarise where the studies agree, "
        "disagree, and what remains open.",
        "Compare the findings of these four papers on retrieval-augmented generation and "
        "propose a research agenda that reconciles them. {LONG}",
        "Write a literature review of consensus protocols from Paxos to modern BFT systems, with "
        "the key results and their limitations.",
        "Combine evidence from multiple sources on the effects of remote work on productivity "
        "and give a nuanced, well-sourced conclusion.",
        "Survey the state of the art in {domain} fraud detection and synthesize the trade-offs "
        "between the main families of methods.",
    ],
}

for _cat, _extra in {
    "formatting": [
        "make this title case: {lowtitle}",
        "put a comma between each of these words: {words}",
        "Wrap each line of this list in double quotes:\n{person}\n{person2}\n{city}",
        'Indent this JSON nicely: {{"id":{n},"tags":["a","b"],"ok":true}}',
        "fix the capitalization: {lowtitle}",
    ],
    "extraction": [
        "What's the invoice number in this text? 'Invoice INV-{n}{m} is due on 4 June.'",
        "Grab the SKU codes from: 'Restock SKU-{n}A and SKU-{m}B before Friday.'",
        "Which cities are mentioned? '{person} flew from {city} to {city2} last week.'",
        "Give me only the email from this signature: '{person} | Sales | {email} | +1 555 0100'",
        "pull the amounts out of: 'paid $12.50 for lunch and $48 for the taxi'",
    ],
    "classification": [
        "Which language is this sentence in? '{PHRASE}'",
        "Rate the tone of this message as friendly, neutral or angry: 'I have asked three times already.'",
        "Is this a bug report or a feature request? 'It would be great to export to PDF.'",
        "Mark each transaction as food, travel or office: taxi $30, sandwich $8, printer paper $12.",
        "spam or not spam: 'Meeting moved to 3pm, same room.'",
    ],
    "simple q&a": [
        "What year did {event}?",
        "how many sides does a hexagon have",
        "What is the square root of 144?",
        "Which ocean is the largest?",
        "What's the opposite of 'generous'?",
        "Who is the author of '1984'?",
    ],
    "data transformation": [
        "Turn this list into a JSON array: {person}, {person2}, {city}",
        "Convert 3 hours 45 minutes to minutes.",
        "Change these dates to US format (MM/DD/YYYY): 2024-03-15, 2023-11-02.",
        "Convert this markdown table to CSV:\n| name | qty |\n|---|---|\n| pens | {n} |",
        "Join these lines with semicolons:\nalpha\nbeta\ngamma",
    ],
    "translation": [
        "translate to {lang} pls: {PHRASE}",
        "Can you put this into {lang}? '{PHRASE}'",
        "What does 'merci beaucoup' mean in English?",
    ],
}.items():
    SIMPLE[_cat] += _extra
for _cat, _extra in {
    "code generation": [
        "Code a small {framework} app with one endpoint that returns {thing} as JSON.",
        "{plang}: a function that groups a list of {domain} orders by customer and sums the totals.",
        "SQL: count {domain} orders per month for the last year, newest first.",
        "Write a TypeScript type and a fetch helper for GET /api/{resource}/:id.",
        "Give me a {plang} snippet that reads environment variables with defaults.",
        "I need a {plang} class that wraps a rate limiter for outgoing API calls.",
        "Write a CLI in {plang} that renames all .txt files in a folder to .md.",
        "Create a GitHub Actions workflow that runs tests on every push for a {plang} project.",
    ],
    "summarization": [
        "Summarize this customer email in one sentence: {LONG}",
        "Boil these notes down to three action items: {LONG}",
        "Give me a short recap of this thread for someone who missed it: {LONG}",
        "Write a two-line summary of this product review: the {product} is {adj}, but the battery and the app are disappointing.",
        "Summarise this paragraph for a newsletter: {LONG}",
    ],
    "bug fixing": [
        "My {plang} test fails with AssertionError: expected 3 but got 4. Here is the function: `def count(xs): return len(xs) + 1`",
        "Why do I get 'ModuleNotFoundError: No module named {module}' when I run my script?",
        "CORS error in the browser when my frontend calls the {domain} API on another port. How do I fix it?",
        "This {plang} code leaks memory in a loop, can you spot the bug?\n```\ncache = []\nfor item in stream:\n    cache.append(item)\n```",
        "Fix: my cron job runs twice every hour instead of once.",
    ],
    "content creation": [
        "Write a friendly reminder email about the {topic} workshop next week.",
        "Explain {concept} to a beginner with a simple analogy.",
        "Write a short toast for {person}'s wedding.",
        "Draft a job post for a part-time barista in {city}.",
        "Write an Instagram caption for our new {product}.",
        "Explain the difference between {concept} and {concept2} in plain words.",
    ],
}.items():
    STANDARD[_cat] += _extra
for _cat, _extra in {
    "architecture": [
        "Our {domain} service must stay available during a full region outage. Design the failover, data replication and consistency approach, and explain the trade-offs.",
        "Evaluate whether we should move our {domain} system from a single Postgres to a distributed database; consider consistency, cost, and operational risk.",
        "Design the backend for {domain} with millions of concurrent users, including caching, queues, sharding and how failures propagate.",
    ],
    "security": [
        "Threat model our {domain} mobile app: who would attack it, how, and which mitigations matter most.",
        "Assess the cryptographic design of our {domain} service: passwords hashed with MD5 and tokens encrypted with AES-ECB.",
        "Find the exploitable weaknesses in this setup: admin panel on a public IP, default credentials, and debug mode enabled.",
        "Review our API key handling for {domain}: keys are logged in plain text and never rotated. What attacks does this enable?",
        "Identify attack vectors in a plugin system that runs user-uploaded scripts on our servers.",
    ],
    "novel algorithm": [
        "Come up with an algorithm that detects anomalies in {domain} metrics streams in sub-linear memory, and prove its guarantees.",
        "Give a rigorous proof that this {domain} matching problem can be solved in polynomial time, or show it is NP-hard.",
    ],
    "multi-step reasoning": [
        "Given churn, pricing and support data for {domain}, reason through why revenue fell and which of three recovery plans to choose, with second-order effects.",
        "Analyse these conflicting requirements from legal, sales and engineering for our {domain} launch and propose a plan that resolves them. {LONG}",
    ],
    "maximum accuracy": [
        "Check these clinical dosage numbers before they go into the protocol; patient safety depends on it: {n} mg/kg for a {m} kg patient twice daily.",
        "This is for an audit and must be exactly right: reconcile these ledger entries and explain every discrepancy. {LONG}",
        "Review this regulatory filing for errors; a mistake means a fine. {LONG}",
    ],
    "research synthesis": [
        "Survey the state of the art in {field} and compare the main approaches and their trade-offs.",
        "What does the evidence from multiple studies say about {topic}? Weigh the sources and conclude.",
        "Write a literature review on {field} with the key papers, their findings and open questions.",
    ],
}.items():
    COMPLEX[_cat] += _extra

SIMPLE["formatting"] += [
    "Convert this heading to sentence case: {lowtitle}",
    "Add bullet points in front of each line:\n{person}\n{city}\n{product}",
]
STANDARD["summarization"] += [
    "Summarize this document in {k} bullet points: ...",
    "Give me the key points of the attached report.",
    "Summarize the article below in plain English.",
    "Can you summarise this PDF for me in a short paragraph?",
    "Write an executive summary of this quarterly update: {LONG}",
]
STANDARD["code generation"] += [
    "Could you build a tiny {framework} service that stores {resource} in SQLite?",
    "Make a {plang} script that downloads a web page and counts the links.",
    "Write a {plang} function that validates a credit card number with the Luhn check.",
]
STANDARD["bug fixing"] += [
    "Uncaught TypeError: Cannot read properties of undefined (reading 'map') in my React "
    "component. How do I fix it?",
    "My {plang} build fails with 'undefined reference to main'. What did I do wrong?",
    "Why does my for loop in {plang} skip the last element?",
]

SYSTEMS_SIMPLE = [
    "You are a JSON formatter. Only output JSON.",
    "You are a translator. Reply with the translation only.",
    "You are a classifier that returns one label.",
    "You extract structured fields from text.",
]
SYSTEMS_STANDARD = [
    "You are a helpful coding assistant.",
    "You are a friendly writing assistant for a marketing team.",
    "You help developers fix bugs.",
]
SYSTEMS_COMPLEX = [
    "You are a principal software architect with 20 years of experience designing "
    "large-scale distributed systems.",
    "You are a senior security researcher and penetration tester.",
    "You are a research scientist who synthesizes academic literature rigorously.",
    "You are a staff engineer reviewing designs for correctness under failure.",
]
LOWTITLES = ["the art of slow travel", "a beginner's guide to sourdough", "why cities need trees"]
WORDS = ["red green blue", "alpha beta gamma delta", "north south east west"]
EVENTS = ["the first moon landing happen", "World War II end", "the euro launch"]
FRAMEWORKS = ["Flask", "FastAPI", "Express", "Spring Boot", "Django", "Gin"]
THINGS = ["the server time", "a health status", "the current user's profile"]
RESOURCES = ["orders", "invoices", "users", "shipments"]
MODULES = ["'requests'", "'numpy'", "'yaml'"]
CONCEPTS = ["an API", "recursion", "a database index", "compound interest", "DNS", "a VPN"]
ADJS = ["sturdy", "stylish", "quiet"]
FIELDS = [
    "retrieval-augmented generation",
    "federated learning",
    "battery chemistry",
    "protein structure prediction",
]
COUNTRIES = ["Kenya", "Canada", "Portugal", "Vietnam", "Chile", "Norway", "Egypt"]
LONG_BITS = [
    "Revenue rose 4% while support tickets doubled after the March release.",
    "The team shipped the billing rewrite late because the vendor API changed twice.",
    "Customers in the north region asked for offline mode and better search.",
    "Latency p99 went from 180 ms to 900 ms during the Friday peak.",
    "Two engineers left and the on-call rotation shrank to four people.",
    "A partner integration failed silently for nine hours before anyone noticed.",
    "The board wants a plan to cut cloud spend by 20% without slowing delivery.",
    "Survey respondents rated onboarding 3.1 out of 5, down from 3.8.",
    "The customer says the invoice was sent to the wrong address and wants a copy.",
    "Marketing wants the launch moved to May so it does not clash with the conference.",
    "Shipping to the west coast takes five days on average, two more than last year.",
]


def _fill(template: str, rng: random.Random) -> str:
    people = rng.sample(PEOPLE, 2)
    cities = rng.sample(CITIES, 2)
    long_text = " ".join(rng.sample(LONG_BITS, rng.randint(3, 7)))
    concepts = rng.sample(CONCEPTS, 2)
    values = {
        "person": people[0],
        "person2": people[1],
        "city": cities[0],
        "city2": cities[1],
        "n": str(rng.randint(2, 90)),
        "m": str(rng.randint(2, 90)),
        "product": rng.choice(PRODUCTS),
        "lang": rng.choice(LANGS),
        "PHRASE": rng.choice(PHRASES),
        "plang": rng.choice(PLANGS),
        "domain": rng.choice(DOMAINS),
        "topic": rng.choice(TOPICS),
        "email": f"{people[0].split()[0].lower()}@example.com",
        "country": rng.choice(COUNTRIES),
        "LONG": long_text,
        "lowtitle": rng.choice(LOWTITLES),
        "words": rng.choice(WORDS),
        "event": rng.choice(EVENTS),
        "framework": rng.choice(FRAMEWORKS),
        "thing": rng.choice(THINGS),
        "resource": rng.choice(RESOURCES),
        "module": rng.choice(MODULES),
        "concept": concepts[0],
        "concept2": concepts[1],
        "adj": rng.choice(ADJS),
        "field": rng.choice(FIELDS),
        "k": str(rng.randint(3, 7)),
    }
    return template.format(**values)


def _variants(text: str, rng: random.Random) -> str:
    """Light rephrasing so the same template does not always read the same way."""
    roll = rng.random()
    if roll < 0.15:
        return "Please " + text[0].lower() + text[1:]
    if roll < 0.25:
        return "Quick one: " + text
    if roll < 0.32:
        return text + " Thanks!"
    if roll < 0.38:
        return "Hey, can you help? " + text
    return text


def build(seed: int = 7, per_template: int = 4) -> list[dict[str, object]]:
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    seen: set[tuple[str, str]] = set()
    for tier, blocks, systems in (
        (1, SIMPLE, SYSTEMS_SIMPLE),
        (2, STANDARD, SYSTEMS_STANDARD),
        (3, COMPLEX, SYSTEMS_COMPLEX),
    ):
        for category, templates in blocks.items():
            for number, template in enumerate(templates):
                for _ in range(per_template):
                    prompt = _variants(_fill(template, rng), rng)
                    system = rng.choice(systems) if rng.random() < 0.2 else ""
                    if (prompt, system) in seen:
                        continue
                    seen.add((prompt, system))
                    row: dict[str, object] = {
                        "prompt": prompt,
                        "tier": tier,
                        "category": category,
                        "template": f"{category}/{number}",
                    }
                    if system:
                        row["system"] = system
                    rows.append(row)
    rng.shuffle(rows)
    return rows


def main() -> None:
    rows = build()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    by_tier = {t: sum(1 for r in rows if r["tier"] == t) for t in (1, 2, 3)}
    print(f"wrote {len(rows)} prompts to {OUT} {by_tier}")


if __name__ == "__main__":
    main()
