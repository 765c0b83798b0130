require ["imap4flags", "fileinto"];
addflag "\\Seen";
fileinto "Read";
fileinto :flags "\\Answered" "Answered";
