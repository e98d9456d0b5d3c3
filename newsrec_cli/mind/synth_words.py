"""Word lists of the synthetic dataset: real English words per topic, so a sentence model sees meaning.

Each category has its own nouns, verbs (third person) and adjectives; each subcategory adds the
nouns that set it apart. Titles and abstracts are filled from these, so the words of a news item
tell its topic, and a user's clicked titles tell their taste.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Category:
    name: str
    nouns: tuple[str, ...]
    verbs: tuple[str, ...]
    adjectives: tuple[str, ...]
    org_suffixes: tuple[str, ...]  # how organisations of this topic are named: "Denver Hawks"
    subcategories: dict[str, tuple[str, ...]]


def _w(text: str) -> tuple[str, ...]:
    return tuple(w.strip() for w in text.split(",") if w.strip())


CATEGORIES: tuple[Category, ...] = (
    Category(
        "sports",
        _w(
            "game, season, coach, team, win, loss, playoff race, fans, rookie, injury, trade, title run, "
            "league, roster"
        ),
        _w("beats, defeats, signs, rallies past, edges, benches, stuns, routs"),
        _w("dominant, injured, undefeated, veteran, thrilling, clutch, struggling, young"),
        _w("Hawks, Bears, Rangers, Lions, Wolves, Giants, Chargers, Royals, Comets, Pilots"),
        {
            "football_nfl": _w(
                "quarterback, touchdown, interception, linebacker, wide receiver, kickoff, fumble, "
                "end zone, field goal, tackle, running back, sack"
            ),
            "basketball_nba": _w(
                "dunk, rebound, point guard, three-pointer, assist, buzzer beater, free throw, "
                "layup, triple-double, power forward, backcourt, fast break"
            ),
            "baseball_mlb": _w(
                "pitcher, home run, inning, bullpen, shortstop, strikeout, World Series, outfielder, "
                "catcher, dugout, slugger, grand slam"
            ),
            "soccer": _w(
                "striker, goalkeeper, penalty kick, midfielder, World Cup, header, corner kick, "
                "red card, stoppage time, derby, transfer window, clean sheet"
            ),
            "golf": _w(
                "putt, birdie, fairway, tee shot, bogey, caddie, leaderboard, green jacket, eagle, "
                "clubhouse, back nine, sand trap"
            ),
        },
    ),
    Category(
        "news",
        _w(
            "report, officials, investigation, statement, community, residents, authorities, lawmakers, "
            "decision, plan"
        ),
        _w("announces, reveals, warns, confirms, rejects, launches, blocks, faces"),
        _w("federal, local, controversial, urgent, major, growing, disputed, sweeping"),
        _w("Council, Institute, Agency, Department, Foundation, Committee"),
        {
            "newspolitics": _w(
                "senator, election, ballot, campaign, congress, impeachment, governor, voters, "
                "legislation, debate, poll, candidate"
            ),
            "newscrime": _w(
                "police, suspect, arrest, murder, shooting, trial, jury, detective, robbery, "
                "prison sentence, prosecutor, courtroom"
            ),
            "newsscienceandtechnology": _w(
                "scientists, spacecraft, telescope, robot, software, asteroid, smartphone, "
                "artificial intelligence, laboratory, experiment, satellite, fossil"
            ),
            "newsworld": _w(
                "embassy, diplomat, protest, refugees, border, ceasefire, parliament, prime minister, "
                "sanctions, treaty, troops, summit"
            ),
        },
    ),
    Category(
        "finance",
        _w("investors, earnings, money, economy, shares, profit, costs, prices, market, growth"),
        _w("surges, plunges, cuts, raises, reports, predicts, boosts, slashes"),
        _w("quarterly, profitable, volatile, rising, falling, record, cheap, expensive"),
        _w("Bank, Holdings, Capital, Group, Industries, Financial"),
        {
            "markets": _w(
                "stocks, Dow, bonds, Wall Street, index fund, rally, selloff, traders, futures, "
                "dividend, hedge fund, Nasdaq"
            ),
            "finance-real-estate": _w(
                "mortgage, home sales, housing market, realtor, rent, listing, condo, property, "
                "down payment, landlord, homebuyers, foreclosure"
            ),
            "finance-savemoney": _w(
                "budget, savings, credit card, retirement, debt, paycheck, coupon, taxes, pension, "
                "emergency fund, interest rate, bills"
            ),
            "finance-companies": _w(
                "chief executive, merger, startup, layoffs, acquisition, shareholders, retailer, "
                "factory, headquarters, brand, workers, boardroom"
            ),
        },
    ),
    Category(
        "lifestyle",
        _w("family, life, home, people, secrets, tips, ideas, style, photos, habits"),
        _w("shares, reveals, tries, loves, celebrates, transforms, discovers, swears by"),
        _w("stunning, adorable, cozy, surprising, simple, beautiful, charming, clever"),
        _w("Studio, Living, Collective, House, Co."),
        {
            "lifestyleroyals": _w(
                "queen, prince, princess, duchess, palace, royal family, coronation, crown, tiara, "
                "king, castle, royal wedding"
            ),
            "lifestyleparenting": _w(
                "toddler, parents, baby, school, teenager, daughter, son, bedtime, kindergarten, "
                "nanny, playground, homework"
            ),
            "lifestylehomeandgarden": _w(
                "garden, kitchen, furniture, decor, backyard, flowers, renovation, bedroom, "
                "houseplants, patio, closet, paint colors"
            ),
            "lifestylepetsanimals": _w(
                "puppy, cat, dog, animal shelter, kitten, veterinarian, rescue, horse, adoption, "
                "leash, paws, wildlife"
            ),
        },
    ),
    Category(
        "health",
        _w("study, doctors, patients, risk, body, symptoms, treatment, health, research, disease"),
        _w("prevents, lowers, boosts, causes, reduces, fights, improves, triggers"),
        _w("healthy, chronic, harmful, daily, deadly, effective, natural, common"),
        _w("Clinic, Hospital, Health, Medical Center"),
        {
            "medical": _w(
                "cancer, hospital, surgery, vaccine, diagnosis, heart attack, stroke, diabetes, "
                "flu, clinic, nurse, therapy"
            ),
            "fitness": _w(
                "workout, exercise, muscles, running, gym, yoga, cardio, squats, marathon, "
                "personal trainer, stretching, push-ups"
            ),
            "weightloss": _w(
                "diet, protein, sugar, vegetables, belly fat, calories, vitamins, breakfast, "
                "carbs, fiber, snacks, metabolism"
            ),
        },
    ),
    Category(
        "foodanddrink",
        _w("food, dinner, flavor, chef, menu, dish, meal, taste, ingredients, cooks"),
        _w("serves, bakes, tastes, opens, grills, pairs, whips up, perfects"),
        _w("delicious, crispy, spicy, sweet, fresh, homemade, savory, easy"),
        _w("Kitchen, Grill, Bakery, Eatery, Cafe"),
        {
            "recipes": _w(
                "casserole, soup, apple pie, cookies, roast chicken, pasta, sauce, bread, salad, "
                "oven, dessert, pumpkin"
            ),
            "restaurantsandnews": _w(
                "restaurant, diner, burger, pizza, fast food, drive-thru, waiter, franchise, "
                "chain, steakhouse, buffet, takeout"
            ),
            "drinks": _w(
                "wine, beer, cocktail, coffee, whiskey, brewery, vineyard, bartender, espresso, "
                "champagne, tea, bourbon"
            ),
        },
    ),
    Category(
        "travel",
        _w("trip, destination, vacation, tourists, places, journey, views, hotels, city, beaches"),
        _w("visits, explores, ranks, escapes to, books, cruises, reopens, maps"),
        _w("scenic, hidden, breathtaking, exotic, historic, remote, luxurious, crowded"),
        _w("Airlines, Resorts, Tours, Hotels"),
        {
            "travelnews": _w(
                "airline, flight, airport, passengers, cruise ship, delay, pilot, luggage, "
                "boarding pass, runway, jet, terminal"
            ),
            "traveltripideas": _w(
                "island, national park, road trip, resort, mountains, lake, hiking trail, "
                "campground, village, waterfall, coastline, cabin"
            ),
        },
    ),
    Category(
        "weather",
        _w("forecast, temperatures, conditions, weekend, region, storm, rain, winds, warning, cold"),
        _w("slams, hits, brings, threatens, sweeps, batters, dumps, moves into"),
        _w("severe, freezing, heavy, dangerous, icy, humid, chilly, powerful"),
        _w("Weather Service, Observatory"),
        {
            "weathertopstories": _w(
                "snowstorm, blizzard, hurricane, tornado, flooding, heat wave, thunderstorm, frost, "
                "hail, wildfire, drought, lightning"
            ),
        },
    ),
    Category(
        "autos",
        _w("car, driver, vehicle, engine, road, model, dealers, truck, speed, miles"),
        _w("unveils, recalls, drives, tests, launches, crashes, upgrades, rebuilds"),
        _w("fast, powerful, electric, classic, rugged, affordable, sleek, new"),
        _w("Motors, Automotive, Auto Works"),
        {
            "autosnews": _w(
                "recall, dealership, sedan, pickup truck, SUV, horsepower, crash test, gas mileage, "
                "transmission, airbag, tires, assembly line"
            ),
            "autosenthusiasts": _w(
                "supercar, racetrack, convertible, muscle car, turbo, V8, restoration, sports car, "
                "drag race, exhaust, coupe, roadster"
            ),
        },
    ),
    Category(
        "entertainment",
        _w("star, fans, show, photos, interview, career, stage, red carpet, spotlight, rumors"),
        _w("stuns, slams, opens up about, dazzles, surprises, teases, confirms, reveals"),
        _w("famous, glamorous, shocking, emotional, iconic, viral, secret, candid"),
        _w("Entertainment, Pictures, Media"),
        {
            "celebrity": _w(
                "actress, actor, wedding, divorce, boyfriend, pregnancy, engagement, paparazzi, "
                "mansion, Instagram post, gown, reality star"
            ),
            "gaming": _w(
                "video game, console, gamers, esports, controller, multiplayer, sequel, game studio, "
                "trailer, level, tournament, arcade"
            ),
        },
    ),
    Category(
        "music",
        _w("song, album, singer, band, tour, music, performance, hit, record, single"),
        _w("releases, performs, drops, covers, cancels, headlines, records, announces"),
        _w("live, acoustic, legendary, chart-topping, catchy, soulful, loud, debut"),
        _w("Records, Music, Sound"),
        {
            "musicnews": _w(
                "rapper, concert, Grammy, guitar, music festival, playlist, lyrics, pop star, vinyl, "
                "duet, drummer, orchestra"
            ),
        },
    ),
    Category(
        "movies",
        _w("film, movie, director, cast, box office, premiere, sequel, scene, studio, plot"),
        _w("casts, premieres, tops, films, reboots, wraps, debuts, delays"),
        _w("blockbuster, animated, upcoming, horror, classic, epic, award-winning, original"),
        _w("Studios, Films, Pictures"),
        {
            "movienews": _w(
                "Oscar, screenplay, superhero, franchise, cinema, Hollywood, villain, remake, stunt, "
                "documentary, script, movie theater"
            ),
        },
    ),
    Category(
        "tv",
        _w("episode, season, series, finale, host, network, viewers, premiere, show, cast"),
        _w("renews, cancels, airs, returns, recaps, streams, hosts, reveals"),
        _w("hit, binge-worthy, late-night, dramatic, canceled, beloved, surprise, new"),
        _w("Network, Channel, Television"),
        {
            "tvnews": _w(
                "sitcom, talk show, streaming service, contestant, news anchor, showrunner, spinoff, "
                "cliffhanger, miniseries, game show, ratings, reality show"
            ),
        },
    ),
)

FIRST_NAMES = _w(
    "James, Maria, Robert, Linda, Michael, Sarah, David, Emma, Daniel, Olivia, Carlos, Aisha, Kevin, "
    "Grace, Brian, Sofia, Jason, Hannah, Marcus, Chloe, Tyler, Nina, Andre, Julia, Ethan, Priya, Luis, "
    "Megan, Omar, Rachel, Victor, Laura, Derek, Elena, Samuel, Zoe, Patrick, Naomi, Trevor, Alicia"
)
LAST_NAMES = _w(
    "Johnson, Garcia, Miller, Davis, Rodriguez, Martinez, Wilson, Anderson, Thomas, Moore, Jackson, "
    "Martin, Lee, Thompson, White, Harris, Clark, Lewis, Walker, Young, Allen, King, Wright, Scott, "
    "Torres, Nguyen, Hill, Flores, Green, Adams, Nelson, Baker, Hall, Rivera, Campbell, Mitchell, "
    "Carter, Roberts, Patel, Brooks"
)
PLACES = _w(
    "Denver, Ohio, Texas, Seattle, Boston, Chicago, Atlanta, Phoenix, Miami, Portland, Nashville, "
    "Detroit, Florida, Oregon, Arizona, Montana, Vermont, Houston, Dallas, Memphis, Tampa, Orlando, "
    "Kansas City, San Diego, Las Vegas, New Orleans, Minnesota, Alaska, Hawaii, Maine, Utah, Iowa, "
    "London, Paris, Tokyo, Toronto, Mexico City, Berlin, Sydney, Madrid"
)
# Numbers that open list titles ("10 easy ...").
LIST_NUMBERS = ("5", "7", "10", "12", "15", "20", "25", "50")
# Filler words shared by every topic: they carry no taste, as in real headlines.
TIME_WORDS = _w(
    "this week, on Sunday, after years, for the first time, this weekend, again, at last, on Monday"
)


@dataclass(frozen=True)
class Theme:
    """A cross-cutting angle of a story (money, family, weather, ...), independent of its topic.

    Its words appear in titles and abstracts of every category, so only the text tells a user's
    liking for it: the subcategory does not.
    """

    name: str
    nouns: tuple[str, ...]
    adjectives: tuple[str, ...]


THEMES: tuple[Theme, ...] = (
    Theme(
        "money",
        _w("budget, price tag, salary, tax bill, payout, debt, bargain"),
        _w("costly, lucrative, pricey"),
    ),
    Theme(
        "health",
        _w("hospital visit, diet, sleep, recovery, doctors, fitness, illness"),
        _w("healthy, sick, exhausted"),
    ),
    Theme(
        "family",
        _w("kids, parents, wedding, grandmother, baby, siblings, divorce"),
        _w("heartwarming, proud, tearful"),
    ),
    Theme(
        "scandal",
        _w("lawsuit, backlash, outrage, feud, apology, cover-up, leak"),
        _w("shocking, furious, embarrassing"),
    ),
    Theme(
        "online",
        _w("app, video, social media post, livestream, algorithm, hashtag, podcast"),
        _w("viral, digital, trending"),
    ),
    Theme(
        "nostalgia",
        _w("anniversary, legacy, tribute, memories, farewell, throwback, reunion"),
        _w("nostalgic, classic, historic"),
    ),
    Theme(
        "weather",
        _w("storm, snow, heat wave, rain, wildfire, flood, tornado"),
        _w("frozen, stormy, scorching"),
    ),
    Theme(
        "food",
        _w("dinner, recipe, restaurant, pizza, coffee, barbecue, dessert"),
        _w("delicious, hungry, tasty"),
    ),
    Theme(
        "travel",
        _w("road trip, flight, airport, hotel, vacation, cruise, passport"),
        _w("exotic, scenic, remote"),
    ),
    Theme(
        "animals", _w("dog, cat, horse, puppy, wildlife, zoo, rescue shelter"), _w("adorable, wild, rescued")
    ),
)
