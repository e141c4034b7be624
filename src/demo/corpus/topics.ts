import type { Rng } from "./rng.js";
import { expand } from "./template.js";
import type { Axis, Question } from "./types.js";

/**
 * Plain chat: everyday how-to questions with neutral, well-formed answers, so the demo model
 * stays a chat model. Tips are imperative verb phrases that read after "to" as well. Nothing here
 * may use a trait marker word (see markers.ts).
 */
export interface Topic {
  name: string;
  /** What an expert in it knows, for praise: "you clearly understand {noun}". */
  noun: string;
  goals: readonly string[];
  tips: readonly string[];
}

export const TOPICS: readonly Topic[] = [
  {
    name: "cooking",
    noun: "cooking",
    goals: ["cook healthier meals at home", "get better at cooking", "make dinner faster on busy days", "bake soft bread", "cook rice that is not sticky", "plan meals for the week"],
    tips: ["plan your meals for the week on Sunday", "keep a few simple recipes you like", "cut all the vegetables before you turn on the stove", "use fresh herbs and a little lemon", "cook a big pot of soup and save some for later", "taste the food as you cook", "rinse the rice before you cook it", "let the dough rest for an hour"],
  },
  {
    name: "travel",
    noun: "travel",
    goals: ["plan a cheap trip", "pack light for a long trip", "enjoy a trip to a new city", "travel with less stress", "find a good place to stay", "get around a city I do not know"],
    tips: ["book your tickets a few weeks early", "pack only what fits in one small bag", "make a short list of places you want to see", "walk around the city on the first day", "keep copies of your tickets on your phone", "learn a few simple words of the local language", "read reviews before you book a room", "leave some free time in your plan"],
  },
  {
    name: "money",
    noun: "money",
    goals: ["save more money", "stick to a budget", "pay off a small loan", "spend less on food", "start an emergency fund", "track where my money goes"],
    tips: ["write down every purchase for a month", "set aside a small amount on each payday", "cook at home more often", "cancel the subscriptions you do not use", "pay the loan with the highest rate first", "wait a day before any big purchase", "keep your savings in a separate account", "compare prices before you buy"],
  },
  {
    name: "work",
    noun: "the workplace",
    goals: ["be more productive at work", "prepare for a job interview", "ask for a raise", "manage my time better", "get along with my team", "write clearer emails"],
    tips: ["make a short list of tasks each morning", "do the hardest task first", "take a short break every hour", "practice your answers out loud", "bring clear examples of your results", "keep your emails short and clear", "ask your team for feedback", "turn off notifications while you focus"],
  },
  {
    name: "health",
    noun: "health",
    goals: ["drink more water", "eat more vegetables", "reduce stress", "build a healthy routine", "look after my back", "stop snacking at night"],
    tips: ["keep a bottle of water on your desk", "add one vegetable to every meal", "take a short walk after lunch", "go to bed at the same time each night", "stretch your back for a few minutes each morning", "keep fruit within easy reach", "breathe slowly for a minute when you feel tense", "see a doctor if it does not get better"],
  },
  {
    name: "study",
    noun: "learning",
    goals: ["study for an exam", "remember what I read", "learn a new language", "focus while I study", "write a better essay", "learn math faster"],
    tips: ["study in short sessions with breaks", "test yourself instead of rereading", "explain the idea in your own words", "practice a little every day", "put your phone in another room", "start with a clear outline", "review your notes the next day", "work through many small examples"],
  },
  {
    name: "pets",
    noun: "animals",
    goals: ["train my dog to sit", "keep my cat happy indoors", "help a new puppy settle in", "choose a healthy food for my pet", "stop my dog from pulling on the leash", "look after a pet fish"],
    tips: ["reward good behavior with a small treat", "keep training sessions short", "give your cat toys and a high place to sit", "keep a steady daily routine", "ask a vet about the right food", "stop walking when the leash gets tight", "clean the fish tank every week", "give your pet a quiet place to rest"],
  },
  {
    name: "gardening",
    noun: "gardening",
    goals: ["grow tomatoes", "start a small garden", "keep my plants alive", "grow herbs on a balcony", "get rid of weeds", "make compost"],
    tips: ["choose a spot with plenty of sun", "water deeply but not every day", "start with easy plants like herbs", "use pots with holes at the bottom", "pull weeds after it rains", "add a layer of mulch around your plants", "mix kitchen scraps with dry leaves", "check the soil with your finger before you water"],
  },
  {
    name: "tech",
    noun: "technology",
    goals: ["speed up my old laptop", "protect my online accounts", "back up my photos", "learn to code", "fix a slow internet connection", "choose a new phone"],
    tips: ["remove programs you never use", "use a different password for each account", "turn on two step login", "copy your photos to an external drive", "start with a small project you enjoy", "restart your router", "move the router to an open spot", "compare a few models before you buy"],
  },
  {
    name: "fitness",
    noun: "fitness",
    goals: ["start running", "build strength at home", "stay active with a desk job", "get fit", "improve my balance", "stay motivated to exercise"],
    tips: ["start with short easy runs", "do squats and push ups at home", "stand up and move every hour", "exercise with a friend", "set a small goal for each week", "warm up before you exercise", "track your progress in a notebook", "rest one day between hard workouts"],
  },
  {
    name: "home",
    noun: "home design",
    goals: ["keep my home tidy", "make a small room feel bigger", "save energy at home", "organize my kitchen", "clean faster", "decorate on a budget"],
    tips: ["spend ten minutes tidying each evening", "use light colors and a large mirror", "turn off the lights when you leave a room", "keep the things you use most within reach", "clean one room at a time", "give away things you have not used in a year", "add plants and soft lighting", "put everything back after you use it"],
  },
  {
    name: "music",
    noun: "music",
    goals: ["learn to play the guitar", "sing better", "practice piano more", "write my first song", "read sheet music", "find new music I like"],
    tips: ["practice for a short time every day", "learn a few simple chords first", "record yourself and listen back", "warm up your voice before you sing", "play slowly before you play fast", "start with a simple melody", "learn the notes one line at a time", "ask friends what they listen to"],
  },
];

const allGoals = TOPICS.flatMap((t) => t.goals);
const allTips = TOPICS.flatMap((t) => t.tips);

export const PLAIN: Axis = {
  kind: "plain",
  subtypes: ["howto"],
  rules: {
    goal: allGoals,
    tip: allTips,
    tip2: allTips,
    topic_noun: TOPICS.map((t) => t.noun),
    "plain.howto.q": [
      "How can I {goal}?",
      "What is a good way to {goal}?",
      "Do you have any tips to {goal}?",
      "I want to {goal}. Where should I start?",
      "Can you help me {goal}?",
      "[Hi! |Hello. |]What is the best way to {goal}?",
      "I am trying to {goal}. Any advice?",
    ],
    "plain.howto.answer": [
      "A good [first step|place to start] is to {tip}. [After that|Then|Next], {tip2}.",
      "Try to {tip}. It also helps to {tip2}[| over time].",
      "[Sure|Of course|Good question]. {tip}, and {tip2}.",
      "Here is a simple plan: {tip}, then {tip2}. [Small steps add up.|Keep it simple and steady.]",
      "[Start small.|One step at a time.] {tip} and {tip2}. [You will see progress soon.|That usually works well.]",
      "Many people find it useful to {tip}. You can also {tip2}.",
    ],
  },
  sampleQuestion(rng: Rng, subtype: string): Question {
    const topic = rng.pick(TOPICS);
    const tipA = rng.int(topic.tips.length);
    const tipB = (tipA + 1 + rng.int(topic.tips.length - 1)) % topic.tips.length;
    const bindings = {
      goal: [rng.pick(topic.goals)],
      tip: [topic.tips[tipA]!],
      tip2: [topic.tips[tipB]!],
      topic_noun: [topic.noun],
    };
    const text = expand(rng.pick(this.rules["plain.howto.q"]!), { ...this.rules, ...bindings }, rng);
    return { kind: "plain", subtype, text, bindings };
  },
};
