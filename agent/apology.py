"""What the callee hears when a provider fails for good in the middle of a call: one short,
fixed apology in the call's language, said by the TTS alone (no LLM round trip: the LLM may
be what failed), then the call ends.

It promises nothing (no call back): the server settles an answered call whose agent had
spoken as `completed` (README, "Call results"), and a campaign does not call it again.
"""

from __future__ import annotations

from typing import Final

# One for every language the service takes (common.config_store.model.LANGUAGES; a test
# holds the two lists together).
APOLOGIES: Final[dict[str, str]] = {
    "en": "Sorry, we are having technical problems and have to end this call. Goodbye.",
    "es": "Lo sentimos, tenemos problemas técnicos y debemos terminar esta llamada. Adiós.",
    "fr": "Désolé, nous rencontrons des problèmes techniques et devons mettre fin à cet appel."
    " Au revoir.",
    "de": "Entschuldigung, wir haben technische Probleme und müssen dieses Gespräch beenden."
    " Auf Wiederhören.",
    "it": "Ci scusi, abbiamo problemi tecnici e dobbiamo terminare questa chiamata. Arrivederci.",
    "pt": "Desculpe, estamos com problemas técnicos e precisamos encerrar esta chamada. Adeus.",
    "nl": "Excuses, we hebben technische problemen en moeten dit gesprek beëindigen. Tot ziens.",
    "pl": "Przepraszamy, mamy problemy techniczne i musimy zakończyć tę rozmowę. Do widzenia.",
    "ja": "申し訳ございません。技術的な問題が発生したため、この通話を終了いたします。"
    "失礼いたします。",
    "zh": "抱歉，我们遇到了技术问题，必须结束本次通话。再见。",
    "hi": "क्षमा करें, हमें तकनीकी समस्या आ रही है और यह कॉल समाप्त करनी होगी। अलविदा।",
    "ko": "죄송합니다. 기술적인 문제로 통화를 종료해야 합니다. 안녕히 계세요.",
    "ru": "Извините, у нас технические неполадки, и мы вынуждены завершить этот звонок."
    " До свидания.",
    "sv": "Förlåt, vi har tekniska problem och måste avsluta samtalet. Hej då.",
    "tr": "Özür dileriz, teknik sorunlar yaşıyoruz ve bu aramayı sonlandırmamız gerekiyor."
    " Hoşça kalın.",
    "da": "Undskyld, vi har tekniske problemer og må afslutte opkaldet. Farvel.",
    "ta": "மன்னிக்கவும், தொழில்நுட்பக் கோளாறு காரணமாக இந்த அழைப்பை முடிக்க வேண்டியுள்ளது. வணக்கம்.",
    "uk": "Вибачте, у нас технічні проблеми, і ми мусимо завершити цей дзвінок. До побачення.",
    "no": "Beklager, vi har tekniske problemer og må avslutte samtalen. Ha det bra.",
    "th": "ขออภัย เรากำลังประสบปัญหาทางเทคนิค จึงต้องวางสายนี้ สวัสดี",
    "id": "Maaf, kami sedang mengalami gangguan teknis dan harus mengakhiri panggilan ini."
    " Sampai jumpa.",
    "bg": "Извинете, имаме технически проблеми и трябва да прекратим разговора. Довиждане.",
    "cs": "Omlouváme se, máme technické potíže a musíme tento hovor ukončit. Na shledanou.",
    "el": "Λυπούμαστε, αντιμετωπίζουμε τεχνικά προβλήματα και πρέπει να τερματίσουμε αυτή την"
    " κλήση. Αντίο.",
    "fi": "Pahoittelemme, meillä on teknisiä ongelmia ja joudumme lopettamaan tämän puhelun."
    " Näkemiin.",
    "hr": "Ispričavamo se, imamo tehničkih poteškoća i moramo prekinuti ovaj poziv. Doviđenja.",
    "hu": "Elnézést, technikai problémáink vannak, ezért be kell fejeznünk ezt a hívást."
    " Viszonthallásra.",
    "ms": "Maaf, kami menghadapi masalah teknikal dan terpaksa menamatkan panggilan ini."
    " Selamat tinggal.",
    "ro": "Ne pare rău, avem probleme tehnice și trebuie să încheiem acest apel. La revedere.",
    "sk": "Ospravedlňujeme sa, máme technické problémy a musíme tento hovor ukončiť. Dovidenia.",
    "vi": "Xin lỗi, chúng tôi đang gặp sự cố kỹ thuật và phải kết thúc cuộc gọi này. Tạm biệt.",
    "tl": "Paumanhin, nagkakaroon kami ng problemang teknikal at kailangan naming tapusin ang"
    " tawag na ito. Paalam.",
    "bn": "দুঃখিত, আমাদের প্রযুক্তিগত সমস্যা হচ্ছে, তাই এই কলটি শেষ করতে হচ্ছে। বিদায়।",
    "te": "క్షమించండి, మాకు సాంకేతిక సమస్యలు ఉన్నాయి, కాబట్టి ఈ కాల్‌ను ముగించాల్సి వస్తోంది. సెలవు.",
    "kn": "ಕ್ಷಮಿಸಿ, ನಮಗೆ ತಾಂತ್ರಿಕ ತೊಂದರೆ ಇದೆ, ಆದ್ದರಿಂದ ಈ ಕರೆಯನ್ನು ಕೊನೆಗೊಳಿಸಬೇಕಾಗಿದೆ. ನಮಸ್ಕಾರ.",
    "mr": "क्षमस्व, आम्हाला तांत्रिक अडचण येत आहे, त्यामुळे हा कॉल संपवावा लागत आहे. नमस्कार.",
    "he": "סליחה, יש לנו בעיות טכניות ועלינו לסיים את השיחה. להתראות.",
    "ur": "معذرت، ہمیں تکنیکی مسائل کا سامنا ہے اور یہ کال ختم کرنی ہوگی۔ خدا حافظ۔",
    "gu": "માફ કરશો, અમને તકનીકી સમસ્યા આવી રહી છે, તેથી આ કૉલ સમાપ્ત કરવો પડશે. આવજો.",
    "pa": "ਮਾਫ਼ ਕਰਨਾ, ਸਾਨੂੰ ਤਕਨੀਕੀ ਸਮੱਸਿਆ ਆ ਰਹੀ ਹੈ, ਇਸ ਲਈ ਇਹ ਕਾਲ ਖਤਮ ਕਰਨੀ ਪਵੇਗੀ। ਅਲਵਿਦਾ।",
}


def apology_for(language: str) -> str:
    """The apology in `language` (a code of LANGUAGES), English for any other."""
    return APOLOGIES.get(language, APOLOGIES["en"])
